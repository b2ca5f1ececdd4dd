"""The Flickr30k Entities file formats the generator writes: phrase markup and annotation XML."""

from __future__ import annotations

from .world import Obj


def _tag(chain: int | str, etype: str, words: list[str]) -> str:
    return f"[/EN#{chain}/{etype} {' '.join(words)}]"


def _xml(image_id: str, w: int, h: int, objs: list[Obj], chains: list[int], groups: dict) -> str:
    lines = ["<annotation>", f"\t<filename>{image_id}.jpg</filename>", "\t<size>", f"\t\t<width>{w}</width>",
             f"\t\t<height>{h}</height>", "\t\t<depth>3</depth>", "\t</size>"]
    for k, o in enumerate(objs):
        names = [chains[k]] + [c for pair, c in groups.items() if k in pair]
        lines += ["\t<object>"] + [f"\t\t<name>{c}</name>" for c in names] + ["\t\t<bndbox>"]
        lines += [f"\t\t\t<{t}>{v + 1}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), o.box)]
        lines += ["\t\t</bndbox>", "\t</object>"]
    lines += ["\t<object>", f"\t\t<name>{chains[len(objs)]}</name>", "\t\t<nobndbox>0</nobndbox>",
              "\t\t<scene>1</scene>", "\t</object>", "</annotation>"]
    return "\n".join(lines) + "\n"
