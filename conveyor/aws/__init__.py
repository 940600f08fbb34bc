"""What the foundation knows about AWS: which identity an action uses (pure; the sessions are activities')."""
