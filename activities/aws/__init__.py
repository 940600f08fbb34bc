"""AWS for activities: sessions per identity (STS AssumeRole), and AWS errors as action errors."""
