"""Lambda handler for PortalFunction: the FastAPI portal behind the HTTP API, through Mangum."""

from mangum import Mangum

from mailmoat.bootstrap import bootstrap
from mailmoat_web.app import create_app

# Built once per cold start (MAILMOAT_RUNTIME=aws: DynamoDB + S3). No lifespan events and no
# sweeper task: a Lambda has no shutdown to hook, and expiry is S3 lifecycle + DynamoDB TTL.
handler = Mangum(create_app(bootstrap(role="portal"), sweep_every=None), lifespan="off")
