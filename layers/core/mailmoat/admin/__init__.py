"""The admin console's core: accounts and sign-in, the audit trail, tenant policy overrides."""
