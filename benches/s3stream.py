#!/usr/bin/env python3
"""Streams stdin to an S3 object, or an object to stdout, with boto3's
managed transfers (multipart, 8 MiB parts, concurrent): the comparison
script's `tar czf - | ... ` stand-in for `rclone rcat`, whose multipart
uploads the moto test server rejects (rclone 1.60: 400 on completion).

    s3stream.py put KEY < data      s3stream.py get KEY > data

Endpoint, bucket and keys come from BACKUPKIT_TEST_S3_*.
"""
import os
import sys

import boto3
from boto3.s3.transfer import TransferConfig

env = os.environ
s3 = boto3.client(
    "s3",
    endpoint_url=env["BACKUPKIT_TEST_S3_ENDPOINT"],
    aws_access_key_id=env["BACKUPKIT_TEST_S3_ACCESS_KEY_ID"],
    aws_secret_access_key=env["BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY"],
    region_name="us-east-1",
)
config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
op, key = sys.argv[1], sys.argv[2]
bucket = env["BACKUPKIT_TEST_S3_BUCKET"]
if op == "put":
    s3.upload_fileobj(sys.stdin.buffer, bucket, key, Config=config)
else:
    s3.download_fileobj(bucket, key, sys.stdout.buffer, Config=config)
