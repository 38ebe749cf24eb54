"""Alerting: district levels -> alert episodes -> durable outbox -> apprise channels, plus CAP 1.2.

Entry points: ``alerting.service.AlertService`` (the facade), ``alerting.api.AlertApi`` (HTTP handlers),
``alerting.config.AlertingConfig`` (the ``[alerting]`` section), ``alerting.record.AlertRecord`` (the public
record). Modules are imported directly; this package imports nothing so that importing one stays cheap.
"""

__all__: list[str] = []
