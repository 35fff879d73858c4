"""The one import for integration authors: everything an integration or a chat connector needs from Herald.

    from engine.plugin import Manifest, ConnectorSpec, IntegrationContext, Connector, Capabilities, Message, ...

Integrations import this package and nothing else of the engine (a test enforces it), so the engine can be
reorganised without breaking a plugin.
"""

from engine.core.errors import AuthError, Busy, HeraldError
from engine.core.events import Actor, AlertData, CommandData, Event, MessageData, ReplyTo, utcnow
from engine.delivery.connector import (
    AddressError,
    Connector,
    DeliveryError,
    NamesChats,
    RateLimited,
    Rejected,
    Unavailable,
)
from engine.delivery.message import Button, Capabilities, Conversation, LinkButton, Message, MessageRef
from engine.delivery.outbox import Outgoing
from engine.intake.decoding import UnreadableInput, ascii_header, load_json
from engine.intake.intake import Incoming, Intake, Outcome
from engine.plugin.api import Acknowledge, ConnectorSpec, Integration, IntegrationContext, KeyValue, Manifest, Unload
from engine.plugin.commands import ARGUMENT_TYPES, CommandArgument, CommandInfo, CommandsChanged
from engine.plugin.discovery import ENTRY_POINT_GROUP, discover
from engine.plugin.secrets import check_secret, read_secret
from engine.security.identity import CONFIG_ACCOUNT_PREFIX, Directory, device_account

__all__ = [
    "ARGUMENT_TYPES", "CONFIG_ACCOUNT_PREFIX", "ENTRY_POINT_GROUP", "Acknowledge", "Actor", "AddressError",
    "AlertData", "AuthError", "Busy", "Button", "Capabilities", "CommandArgument", "CommandData", "CommandInfo",
    "CommandsChanged", "Connector", "ConnectorSpec", "Conversation", "DeliveryError", "Directory", "Event",
    "HeraldError", "Incoming", "Intake", "Integration", "IntegrationContext", "KeyValue", "LinkButton", "Manifest",
    "Message", "MessageData", "MessageRef", "NamesChats", "Outcome", "Outgoing", "RateLimited", "Rejected",
    "ReplyTo", "Unavailable", "Unload", "UnreadableInput", "ascii_header", "check_secret", "device_account",
    "discover", "load_json", "read_secret", "utcnow",
]
