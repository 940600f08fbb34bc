"""Creates what the example deploys to and watches: three buckets and the `site-5xx` alarm (in state OK).

Run against moto (or an AWS account you may change) with boto3's usual environment, e.g. AWS_ENDPOINT_URL."""

from __future__ import annotations

import boto3

BUCKETS = ("example-canary", "example-eu", "example-us")
ALARM = "site-5xx"


def main() -> None:
    s3, cloudwatch = boto3.client("s3"), boto3.client("cloudwatch")
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)
    cloudwatch.put_metric_alarm(
        AlarmName=ALARM,
        MetricName="5XXError",
        Namespace="AWS/CloudFront",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="example: healthy")
    print(f"created {', '.join(BUCKETS)} and alarm {ALARM} (OK)")


if __name__ == "__main__":
    main()
