"""A minimal SMIL presentation for an MMS: one slide per image, the text on the first."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from protocols.mm7.messages import Part


def presentation(parts: tuple[Part, ...], *, content_id: str = "smil") -> Part:
    """An `application/smil` part laying out `parts` (images and text) by Content-Location."""
    smil = ET.Element("smil")
    head = ET.SubElement(smil, "head")
    layout = ET.SubElement(head, "layout")
    ET.SubElement(layout, "root-layout", {"width": "100%", "height": "100%"})
    ET.SubElement(layout, "region", {"id": "Image", "top": "0", "left": "0",
                                     "width": "100%", "height": "70%", "fit": "meet"})
    ET.SubElement(layout, "region", {"id": "Text", "top": "70%", "left": "0",
                                     "width": "100%", "height": "30%"})
    body = ET.SubElement(smil, "body")
    images = [p for p in parts if p.content_type.startswith("image/")]
    texts = [p for p in parts if p.content_type.startswith("text/")]
    for i in range(max(len(images), 1)):
        slide = ET.SubElement(body, "par", {"dur": "5000ms"})
        if i < len(images):
            ET.SubElement(slide, "img", {"src": _ref(images[i]), "region": "Image"})
        if i == 0:
            for t in texts:
                ET.SubElement(slide, "text", {"src": _ref(t), "region": "Text"})
    data = ET.tostring(smil, encoding="utf-8", xml_declaration=False)
    return Part("application/smil", data, content_id, "utf-8", "presentation.smil")


def _ref(part: Part) -> str:
    return part.location or f"cid:{part.content_id}"
