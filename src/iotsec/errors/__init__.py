"""The one error hierarchy of iotsec.

Every error says what was wrong (``str(err)``) and what to do about it (``err.hint``).
The CLI prints both on one line and exits 1; the API answers RFC 9457 problem+json
with ``err.status``. Foreign exceptions are translated at the boundary with
``raise ... from exc`` and never leak secrets: messages name objects, not key material.

The classes live in one module per domain and are all importable from here.
"""

from iotsec.errors.audit import *  # noqa: F403
from iotsec.errors.backup import *  # noqa: F403
from iotsec.errors.base import *  # noqa: F403
from iotsec.errors.broker import *  # noqa: F403
from iotsec.errors.ca import *  # noqa: F403
from iotsec.errors.coap import *  # noqa: F403
from iotsec.errors.detect import *  # noqa: F403
from iotsec.errors.enrol import *  # noqa: F403
from iotsec.errors.est import *  # noqa: F403
from iotsec.errors.firmware import *  # noqa: F403
from iotsec.errors.keys import *  # noqa: F403
from iotsec.errors.netseg import *  # noqa: F403
from iotsec.errors.ocsp import *  # noqa: F403
from iotsec.errors.ota import *  # noqa: F403
from iotsec.errors.profiles import *  # noqa: F403
from iotsec.errors.protect import *  # noqa: F403
from iotsec.errors.scan import *  # noqa: F403
from iotsec.errors.tokens import *  # noqa: F403
