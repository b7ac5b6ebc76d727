"""Lambda handler for PortalFunction: the FastAPI portal behind the HTTP API, through Mangum."""

from mangum import Mangum

from mailmoat.bootstrap.aws import LambdaPortal
from mailmoat_web.app import create_app

# Built at the first request (MAILMOAT_RUNTIME=aws: DynamoDB + S3), so that importing touches no
# AWS. No lifespan events and no sweeper task: a Lambda has no shutdown to hook, and expiry is
# S3 lifecycle + DynamoDB TTL. No clamd here: what a password opens is scanned by the AvScan
# function (portal_antivirus_later).
handler = LambdaPortal(create_app, Mangum)
