"""Lambda handler for PortalFunction: the FastAPI portal behind the HTTP API, through Mangum."""

from mangum import Mangum

from mailmoat.bootstrap import bootstrap
from mailmoat.bootstrap.aws import portal_antivirus_later
from mailmoat_web.app import create_app

# Built once per cold start (MAILMOAT_RUNTIME=aws: DynamoDB + S3). No lifespan events and no
# sweeper task: a Lambda has no shutdown to hook, and expiry is S3 lifecycle + DynamoDB TTL.
# No clamd here: what a password opens is scanned by the AvScan function (portal_antivirus_later).
runtime = bootstrap(role="portal")
handler = Mangum(create_app(runtime, sweep_every=None, later=portal_antivirus_later(runtime.settings)),
                 lifespan="off")
