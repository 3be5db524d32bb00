"""SMPP 3.4 protocol constants: command ids, command_status codes, optional parameter tags.

Values follow the SMPP v3.4 specification (issue 1.2): section 5.1.2 (command_id),
5.1.3 (command_status), 5.3.2 (optional parameter tags, table 5-1/5-2) and 5.2.12 (esm_class).
"""

from __future__ import annotations

from enum import IntEnum

RESP_BIT = 0x80000000
"""Bit 31 of command_id: set on every response PDU (and on generic_nack)."""


class CommandId(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class Status(IntEnum):
    """command_status values (SMPP 3.4 section 5.1.3)."""

    ROK = 0x00000000  # No error
    RINVMSGLEN = 0x00000001  # Message length is invalid
    RINVCMDLEN = 0x00000002  # Command length is invalid
    RINVCMDID = 0x00000003  # Invalid command id
    RINVBNDSTS = 0x00000004  # Incorrect BIND status for given command
    RALYBND = 0x00000005  # ESME already in bound state
    RINVPRTFLG = 0x00000006  # Invalid priority flag
    RINVREGDLVFLG = 0x00000007  # Invalid registered delivery flag
    RSYSERR = 0x00000008  # System error
    RINVSRCADR = 0x0000000A  # Invalid source address
    RINVDSTADR = 0x0000000B  # Invalid destination address
    RINVMSGID = 0x0000000C  # Message id is invalid
    RBINDFAIL = 0x0000000D  # Bind failed
    RINVPASWD = 0x0000000E  # Invalid password
    RINVSYSID = 0x0000000F  # Invalid system id
    RCANCELFAIL = 0x00000011  # cancel_sm failed
    RREPLACEFAIL = 0x00000013  # replace_sm failed
    RMSGQFUL = 0x00000014  # Message queue full
    RINVSERTYP = 0x00000015  # Invalid service type
    RINVNUMDESTS = 0x00000033  # Invalid number of destinations
    RINVDLNAME = 0x00000034  # Invalid distribution list name
    RINVDESTFLAG = 0x00000040  # Destination flag is invalid (submit_multi)
    RINVSUBREP = 0x00000042  # Invalid submit with replace request
    RINVESMCLASS = 0x00000043  # Invalid esm_class field data
    RCNTSUBDL = 0x00000044  # Cannot submit to distribution list
    RSUBMITFAIL = 0x00000045  # submit_sm or submit_multi failed
    RINVSRCTON = 0x00000048  # Invalid source address TON
    RINVSRCNPI = 0x00000049  # Invalid source address NPI
    RINVDSTTON = 0x00000050  # Invalid destination address TON
    RINVDSTNPI = 0x00000051  # Invalid destination address NPI
    RINVSYSTYP = 0x00000053  # Invalid system_type field
    RINVREPFLAG = 0x00000054  # Invalid replace_if_present flag
    RINVNUMMSGS = 0x00000055  # Invalid number of messages
    RTHROTTLED = 0x00000058  # Throttling error (ESME has exceeded allowed message limits)
    RINVSCHED = 0x00000061  # Invalid scheduled delivery time
    RINVEXPIRY = 0x00000062  # Invalid message validity period (expiry time)
    RINVDFTMSGID = 0x00000063  # Predefined message invalid or not found
    RX_T_APPN = 0x00000064  # ESME receiver temporary app error code
    RX_P_APPN = 0x00000065  # ESME receiver permanent app error code
    RX_R_APPN = 0x00000066  # ESME receiver reject message error code
    RQUERYFAIL = 0x00000067  # query_sm request failed
    RINVOPTPARSTREAM = 0x000000C0  # Error in the optional part of the PDU body
    ROPTPARNOTALLWD = 0x000000C1  # Optional parameter not allowed
    RINVPARLEN = 0x000000C2  # Invalid parameter length
    RMISSINGOPTPARAM = 0x000000C3  # Expected optional parameter missing
    RINVOPTPARAMVAL = 0x000000C4  # Invalid optional parameter value
    RDELIVERYFAILURE = 0x000000FE  # Delivery failure (used for data_sm_resp)
    RUNKNOWNERR = 0x000000FF  # Unknown error


class Tag(IntEnum):
    """Optional parameter (TLV) tags, SMPP 3.4 section 5.3.2, table 5-1."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    DEST_TELEMATICS_ID = 0x0008
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    SOURCE_TELEMATICS_ID = 0x0010
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    DEST_PORT = 0x020B  # alias of DESTINATION_PORT
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    SMS_SIGNAL = 0x1203
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


# Vendor specific TLV tags occupy 0x1400-0x3FFF (SMPP 3.4 section 5.3.2); they are kept raw.
VENDOR_TAG_MIN = 0x1400
VENDOR_TAG_MAX = 0x3FFF


# --- esm_class (SMPP 3.4 section 5.2.12) -------------------------------------------------------
ESM_MODE_MASK = 0x03  # bits 1-0: messaging mode
ESM_MODE_DEFAULT = 0x00
ESM_MODE_DATAGRAM = 0x01
ESM_MODE_FORWARD = 0x02  # transaction mode
ESM_MODE_STORE_FORWARD = 0x03

ESM_RECEIPT_MASK = 0x3C  # bits 5-2: message type
ESM_SMSC_RECEIPT = 0x04  # SMSC delivery receipt (deliver_sm)
ESM_SME_DELIVERY_ACK = 0x08
ESM_SME_MANUAL_ACK = 0x10
ESM_CONVERSATION_ABORT = 0x18
ESM_INTERMEDIATE_NOTIFICATION = 0x20

ESM_FEATURE_MASK = 0xC0  # bits 7-6: GSM network specific features
ESM_UDHI = 0x40  # short_message starts with a User Data Header
ESM_REPLY_PATH = 0x80


# --- registered_delivery (SMPP 3.4 section 5.2.17) ---------------------------------------------
REG_DLV_SMSC_MASK = 0x03  # 0: none, 1: on success or failure, 2: on failure only
REG_DLV_SME_ACK_MASK = 0x0C
REG_DLV_INTERMEDIATE = 0x10


# --- message_state (SMPP 3.4 section 5.2.28) ---------------------------------------------------
class MessageState(IntEnum):
    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


INTERFACE_VERSION_34 = 0x34


# --- names for logs and metric labels --------------------------------------------------------
COMMAND_NAMES: dict[int, str] = {int(c): c.name.lower() for c in CommandId}
"""command_id -> SMPP spec name ("submit_sm", "deliver_sm_resp", ...)."""

COMMAND_IDS: dict[str, int] = {name: cid for cid, name in COMMAND_NAMES.items()}
"""SMPP spec name -> command_id."""

TAG_NAMES: dict[int, str] = {}
for _t in Tag:  # first name wins for aliases (DESTINATION_PORT before DEST_PORT)
    TAG_NAMES.setdefault(int(_t), _t.name.lower())
del _t

STATUS_NAMES: dict[int, str] = {int(s): "ESME_" + s.name for s in Status}


def command_name(command_id: int) -> str:
    """Spec name of a command id, or ``unknown_0x%08x`` (bounded set of labels is the caller's job)."""
    name = COMMAND_NAMES.get(command_id)
    if name is None:
        return f"unknown_0x{command_id & 0xFFFFFFFF:08x}"
    return name


def tag_name(tag: int) -> str:
    """Spec name of a TLV tag, or ``tag_0x%04x`` for vendor / unknown tags."""
    name = TAG_NAMES.get(tag)
    if name is None:
        return f"tag_0x{tag & 0xFFFF:04x}"
    return name


def status_name(status: int) -> str:
    """``ESME_ROK``-style name of a command_status, or ``0x%08x`` when not in the spec."""
    name = STATUS_NAMES.get(status)
    if name is None:
        return f"0x{status & 0xFFFFFFFF:08x}"
    return name
