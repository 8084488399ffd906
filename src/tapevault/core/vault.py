"""The vault: tapevault's services, built once per process (``runtime.build_vault``).

Each service takes the narrow repository protocol it needs, never the whole ``Repository``:

    Tenants             tenants, their credentials and settings          (core/tenants.py)
    Quotas              the tenants' storage quotas                      (core/quota.py)
    Sessions            create, find, end; a session's recordings        (core/sessions.py)
    Ingest              uploads and live streams up to their ack         (core/ingest.py)
    Jobs                new jobs, the merge rule, the worker's wake-up   (core/jobs.py)
    KeyRing             the URL signing keys, re-read periodically       (core/keyring.py)
    Links               signed URLs of recordings, peaks, metadata       (core/links.py)
    MediaAuthorisation  may this signed URL read these bytes now         (core/mediaauth.py)
    ServingCache        what the hot path reads; the writes that change it (core/servingcache.py)

This class only holds them, so that the services built on top (calls, renditions, retention,
player links, the HTTP dialects, the worker) are handed one object: a thin compatibility with
the single ``Vault`` that used to hold all of this, kept because every dialect and test takes
one. It has no behaviour and no repository.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapevault.core.clock import Clock
from tapevault.core.delivery import DirectLinks
from tapevault.core.ingest import Ingest
from tapevault.core.jobs import Jobs
from tapevault.core.keyring import KeyRing
from tapevault.core.links import Links
from tapevault.core.mediaauth import MediaAuthorisation
from tapevault.core.ports import NodeLocalFiles, ObjectStore
from tapevault.core.quota import Quotas
from tapevault.core.servingcache import ServingCache
from tapevault.core.sessions import Sessions
from tapevault.core.tenants import Tenants


@dataclass(frozen=True, slots=True)
class Vault:
    tenants: Tenants
    quotas: Quotas
    sessions: Sessions
    ingest: Ingest
    jobs: Jobs
    keys: KeyRing
    links: Links
    media: MediaAuthorisation
    cache: ServingCache
    direct: DirectLinks
    store: ObjectStore
    clock: Clock
    local: NodeLocalFiles  # this node's working files (storage/node_local.py)
