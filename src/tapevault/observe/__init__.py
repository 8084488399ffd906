"""Operations: the Prometheus metrics (``metrics``) and their exposition (``exposition``).

Outside ``core/`` on purpose: the core counts through small ports (``core.retention``'s
``RetentionCounts``, ``core.auditlog``'s ``AuditCounts``), and these modules are their adapters.
"""
