"""SMPP 3.4: sans-I/O PDU codec and ESME session, plus a thin asyncio client.

Modules: ``constants`` (enums), ``pdu`` (PDU values, encoding), ``codec`` (decoding),
``receipt`` (delivery receipt text), ``text`` (data_coding), ``session`` (ESME state
machine), ``segment`` (long messages), ``throttle`` (token bucket, back-off), ``client``
(asyncio adapter).
"""
