"""MM7 (3GPP TS 23.140): the VASP↔MMSC interface, SOAP 1.1 with attachments over HTTP.

Sans-I/O: ``messages`` (operation values), ``codec`` (``encode()`` a value for a schema
version, ``decode()`` bytes into a value or a ``DecodeError``, never an exception), ``mime``
(multipart/related), ``smil`` (a presentation part), ``status`` (status codes, MMStatus),
``versions`` (REL-5-MM7-1-0 … REL-6-MM7-1-4). ``client`` is the thin asyncio adapter (aiohttp).
"""
