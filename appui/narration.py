"""What the page says about a picture to someone who cannot see it: the pictures' text alternatives,
the Description block (a polite live region), the regions to explore by keyboard, and reading aloud.

The words come from :mod:`regioncap.narrate` (the CLI's ``"description"`` uses the same): the narration
for the annotated picture, a region's place ("at the top left") and its accessible name
(:func:`regioncap.narrate.region_label`). Numbers are the app's reading-order numbers (``View.numbers``).
"""

from __future__ import annotations

import html

from regioncap.narrate import describe_region, region_label

from appui.view import View

PARTS = {  # "Caption your own box" by words: a part of the picture as fractions (x1, y1, x2, y2)
    "the whole picture": (0, 0, 1, 1), "the top half": (0, 0, 1, 0.5), "the bottom half": (0, 0.5, 1, 1),
    "the left half": (0, 0, 0.5, 1), "the right half": (0.5, 0, 1, 1),
    "the top left quarter": (0, 0, 0.5, 0.5), "the top right quarter": (0.5, 0, 1, 0.5),
    "the bottom left quarter": (0, 0.5, 0.5, 1), "the bottom right quarter": (0.5, 0.5, 1, 1),
    "the middle": (0.25, 0.25, 0.75, 0.75),
}


def part_box(part: str, width: int, height: int) -> list[float]:
    """``part`` (a key of PARTS) of a ``width`` × ``height`` picture as a box in pixels."""
    x1, y1, x2, y2 = PARTS[part]
    return [x1 * width, y1 * height, x2 * width, y2 * height]


def _named(view: View, region) -> str:
    """"region 2, a red circle at the top left"."""
    r = view.result
    return f"region {view.numbers()[id(region)]}, {describe_region(region, r.width, r.height)}"


def matches_alt(view: View, phrase: str, matches) -> str:
    """The Search picture's text alternative: which regions match ``phrase`` (``matches``: [(Region, sim)])."""
    if not matches:
        return f"No region matches '{phrase}' well; the picture is shown dimmed."
    n = len(matches)
    head = f"{n} region{'s' if n != 1 else ''} match{'es' if n == 1 else ''} '{phrase}'"
    return f"{head}: " + "; ".join(_named(view, region) for region, _ in matches) + "."


def alignment_alt(view: View, alignment) -> str:
    """The Sentence picture's text alternative: each phrase and the region it went to."""
    parts = [f"'{a.phrase}' is {_named(view, a.region) if a.region else 'the whole picture'}" for a in alignment]
    return "Each phrase's best region: " + "; ".join(parts) + "."


def description_html(view: View | None) -> str:
    """The Description block's text: the narration (before any picture, what to do)."""
    if view is None:
        return "<p>Upload a picture: its description appears here.</p>"
    return f"<p>{html.escape(view.result.describe())}</p>"


def explorer_html(view: View | None) -> str:
    """One button per region in reading order, named by :func:`region_label`, its box in percent of the
    picture (``data-box``: left, top, width, height) for the outline drawn while it has focus."""
    if view is None or not view.result.regions:
        return ""
    r, order = view.result, view.order()
    items = []
    for k, i in enumerate(order):
        region = r.regions[i]
        x1, y1, x2, y2 = region.box
        box = [100 * x1 / r.width, 100 * y1 / r.height, 100 * (x2 - x1) / r.width, 100 * (y2 - y1) / r.height]
        label = html.escape(region_label(k + 1, len(order), region, r.width, r.height))
        items.append(f'<li><button type="button" class="region-button" data-box="{",".join(f"{c:.2f}" for c in box)}"'
                     f'>{label}</button></li>')
    return f'<ul class="region-list" aria-label="Regions, in reading order">{"".join(items)}</ul>'


# Runs once when the explorer loads (gr.HTML's js_on_load: ``element`` is the block, kept across updates).
EXPLORER_JS = """
const PAD = 6;  // the outline sits just outside the box, so the box drawn on the picture stays visible
const ring = document.createElement('div');
ring.id = 'region-outline';
ring.dataset.pad = PAD;
ring.setAttribute('aria-hidden', 'true');
Object.assign(ring.style, {position: 'absolute', display: 'none', pointerEvents: 'none', zIndex: 1000,
  border: '4px solid #ffd400', boxShadow: '0 0 0 3px #000, inset 0 0 0 3px #000', boxSizing: 'border-box'});
document.body.appendChild(ring);
let current = null;
function place() {
  const img = document.querySelector('#annotated img');
  if (!current || !img || !img.naturalWidth) { ring.style.display = 'none'; return; }
  let r = img.getBoundingClientRect();
  const b = current.getBoundingClientRect();
  if (r.top < 0 && b.bottom - r.top + 8 <= window.innerHeight) {  // bring the picture back into view
    window.scrollBy({top: r.top - 8, behavior: 'instant'});
    r = img.getBoundingClientRect();
  }
  const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);  // object-fit: contain
  const w = img.naturalWidth * s, h = img.naturalHeight * s;
  const x0 = r.left + window.scrollX + (r.width - w) / 2, y0 = r.top + window.scrollY + (r.height - h) / 2;
  const [left, top, width, height] = current.dataset.box.split(',').map(Number);
  Object.assign(ring.style, {display: 'block', left: (x0 + left * w / 100 - PAD) + 'px',
    top: (y0 + top * h / 100 - PAD) + 'px', width: (Math.max(8, width * w / 100) + 2 * PAD) + 'px',
    height: (Math.max(8, height * h / 100) + 2 * PAD) + 'px'});
}
element.addEventListener('focusin', (e) => {
  current = e.target.closest('button[data-box]');
  place();
});
element.addEventListener('focusout', () => { current = null; place(); });
element.addEventListener('keydown', (e) => {
  const buttons = [...element.querySelectorAll('button[data-box]')];
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const to = {ArrowDown: at + 1, ArrowRight: at + 1, ArrowUp: at - 1, ArrowLeft: at - 1, Home: 0,
              End: buttons.length - 1}[e.key];
  if (to === undefined) return;
  e.preventDefault();
  buttons[Math.max(0, Math.min(buttons.length - 1, to))].focus();
});
window.addEventListener('resize', place);
window.addEventListener('scroll', place, {passive: true});
"""

# The Description block's element becomes a polite live region: a screen reader reads a new narration.
DESCRIPTION_JS = "element.setAttribute('aria-live', 'polite');"

# "Read aloud": the browser's own speech synthesis speaks the Description; pressed while speaking, it stops.
SPEAK_JS = """() => {
  const synth = window.speechSynthesis;
  const text = (document.querySelector('#description')?.innerText || '').trim();
  if (!synth || !text) return;
  if (synth.speaking) { synth.cancel(); return; }
  synth.speak(new SpeechSynthesisUtterance(text));
}"""
