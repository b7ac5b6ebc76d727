"""Lambda handler for PortalFunction: the FastAPI portal behind the HTTP API, through Mangum."""

from mangum import Mangum

from mailmoat_web.app import create_app

# Built once per cold start. No lifespan events: a Lambda has no shutdown to hook.
handler = Mangum(create_app(), lifespan="off")
