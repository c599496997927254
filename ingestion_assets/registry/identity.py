"""A supplier's identity: its partition key (a readable slug of its name) and, when the master
sheet gives none, its id (a UUID derived from the key, the same on every sync)."""

import hashlib
import uuid

from slugify import slugify

SUPPLIER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:supplier-courier:suppliers")


def supplier_key(name: str) -> str:
    """A readable, stable partition key: `ООО «Альфа»` → `ooo-alfa`."""
    key = slugify(name, max_length=60, word_boundary=True)
    return key or "supplier-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]


def derived_supplier_id(key: str) -> str:
    return str(uuid.uuid5(SUPPLIER_NAMESPACE, key))
