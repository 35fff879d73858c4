"""End-to-end encryption upkeep (only with `encryption = true` and the matrix-nio[e2e] extra installed).

nio decrypts what /sync brings and encrypts what the bot sends; between syncs the bot must upload its one-time
keys, query and claim the keys of the devices in its rooms, and send the to-device messages nio queued.

Device trust is trust on first use: a device of a room member is marked verified the first time Herald sees its
keys, and nio refuses a later change of that device's keys. Herald does no interactive verification.
"""

from __future__ import annotations

import logging

from integrations.matrix.session import Session

log = logging.getLogger("herald.matrix")


async def upkeep(session: Session) -> None:
    client = session.client
    if client.olm is None:
        return
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    for devices in client.device_store.values():
        for device in devices.values():
            if not device.verified and not device.blacklisted:
                client.verify_device(device)  # trust on first use
    await client.send_to_device_messages()
