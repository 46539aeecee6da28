"""The legacy-modality gateway (PS3.15 B.1 Secure Transport for modalities without TLS).

Modalities that cannot speak TLS send plain DIMSE to one configured interface
of the gateway. The gateway

1. accepts an association only from an allow-listed (calling AE title, source
   IP) pair (:mod:`.allowlist`, :mod:`.listener`; PS3.8 7.1.1 and 9.3.4, A-ASSOCIATE-RJ
   "calling AE title not recognized" for everyone else);
2. answers a C-STORE with Success only once the object is durably queued,
   encrypted at rest under a key derived from the archive's keys
   (:mod:`.queue`; PS3.4 B.2.3 statuses), or, in pass-through mode, once the
   upstream confirmed it (:mod:`.passthrough`);
3. forwards every queued object, oldest first, over mutually authenticated TLS
   (PS3.15 Annex B.1, "The Basic TLS Secure Transport Connection Profile") to
   an upstream archive, retrying with exponential back-off and jitter until the
   upstream confirms it (:mod:`.forwarder`);
4. reports its state in a small status file that ``dicomguard gateway status``
   reads without the archive passphrase (:mod:`.status`).

The plaintext leg is the one weak link by definition: it should run on an
isolated modality network segment, ideally a direct cable or VLAN between the
modality and the gateway host. The allow-list is not authentication (an AE
title and a source address can be forged by anyone on that segment); it limits
who can reach the gateway by accident or by casual probing.
"""

from dicomguard.gateway.config import GatewayConfig, GatewayError

__all__ = ["GatewayConfig", "GatewayError"]
