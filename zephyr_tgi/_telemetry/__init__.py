"""OpenTelemetry spans and metrics for the clients (the `otel` extra).

`settings` holds what users configure and imports nothing of OpenTelemetry; `_describe` turns requests, results
and stream chunks into GenAI semantic-convention attributes (plain data, no OpenTelemetry either); `_instrument`
is the only module that imports OpenTelemetry, and it is loaded only when a client turns telemetry on.
"""
