"""A real parallel corpus from the machine's gettext catalogs (English msgid -> translated msgstr).

Every Debian machine carries ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``. We read them with
Python's ``gettext`` module, keep plain sentence-like pairs, deduplicate by source, and split
deterministically (by a hash of the source) into train/valid/test.
"""

import glob
import gettext
import hashlib
import os
import re

_FORMAT = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[hlLqjzt]*[diouxXeEfFgGcrsaAp%]|\{[^}]*\}|\$\{|<[^>]+>|&\w")


def _clean(text):
    text = text.replace("_", "").replace("\n", " ").strip()
    return re.sub(r"\s+", " ", text)


def catalog_pairs(path: str, max_chars: int = 120):
    """The usable (English, translation) messages of one ``.mo`` catalog in a stable order, or
    None when the file cannot be read: no format strings or markup, 2-30 English words, at most
    ``max_chars`` characters (translations twice that), not copied untranslated, no tabs."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except Exception:
        return None
    pairs = []
    for src, tgt in sorted(catalog.items(), key=lambda kv: str(kv[0])):
        if not isinstance(src, str) or not src or not isinstance(tgt, str) or not tgt:
            continue
        if _FORMAT.search(src) or _FORMAT.search(tgt):
            continue
        src, tgt = _clean(src), _clean(tgt)
        if not (2 <= len(src.split()) <= 30) or len(src) > max_chars or len(tgt) > 2 * max_chars:
            continue
        if src == tgt or "\t" in src + tgt:
            continue
        pairs.append((src, tgt))
    return pairs


def read_catalogs(lang: str, root: str = "/usr/share/locale", max_chars: int = 120):
    """Pairs (english, translation) from every catalog of ``lang``, deduplicated by English."""
    files = sorted(glob.glob(os.path.join(root, lang, "LC_MESSAGES", "*.mo")))
    if not files:
        raise FileNotFoundError(f"no gettext catalogs under {os.path.join(root, lang, 'LC_MESSAGES')}")
    seen, pairs = set(), []
    for path in files:
        for src, tgt in catalog_pairs(path, max_chars) or ():
            if src not in seen:
                seen.add(src)
                pairs.append((src, tgt))
    return pairs


def split_pairs(pairs, valid: int = 200, test: int = 200):
    """Deterministic split: order by a hash of the source sentence."""
    ordered = sorted(pairs, key=lambda p: hashlib.md5(p[0].encode()).hexdigest())
    return {"test": ordered[:test], "valid": ordered[test:test + valid], "train": ordered[test + valid:]}


def write_splits(splits, out_dir, src="en", tgt="de"):
    os.makedirs(out_dir, exist_ok=True)
    for name, pairs in splits.items():
        for lang, idx in ((src, 0), (tgt, 1)):
            with open(os.path.join(out_dir, f"{name}.{lang}"), "w", encoding="utf-8") as f:
                for p in pairs:
                    f.write(p[idx] + "\n")
