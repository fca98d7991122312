"""The REST routes from ``google.api.http``: route templates and binding (``routes``),
response and upload framings (``framing``), Range (``ranges``), file sending (``filesend``) and
the endpoint."""
