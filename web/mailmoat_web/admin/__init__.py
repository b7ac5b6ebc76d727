"""The tenant admin console (/admin): separate sign-in and session from the recipient portal."""

from mailmoat_web.admin.routes import admin_console_router

__all__ = ["admin_console_router"]
