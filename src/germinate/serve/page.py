"""GET /: a page where a person drops or picks images and sees each with its top classes.
Self-contained (inline style and script, no CDN), so it works with no internet."""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>germinate</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
#drop{display:block;border:2px dashed #8a8;border-radius:8px;padding:2em;margin:1em 0;text-align:center;background:#f7fbf7;cursor:pointer}
#drop.over{background:#e6f4e6}
.card{display:flex;gap:1em;align-items:flex-start;border-bottom:1px solid #eee;padding:.8em 0}
.card>div{flex:1;max-width:420px}.card img{width:128px;height:128px;object-fit:cover;border-radius:4px;border:1px solid #ddd}
.label{font-size:1.2em;font-weight:600}.amb{color:#a60;font-size:.9em}.err{color:#b00}
.bar{background:#dfe8df;height:.7em;border-radius:3px;margin:.15em 0 .4em}.bar>div{background:#5a5;height:100%;border-radius:3px}
small{color:#666}
</style></head><body>
<h1>germinate</h1><p id="model"><small>loading model&hellip;</small></p>
<label id="drop">Drop images here, or click to pick them
<input id="pick" type="file" accept="image/*" multiple hidden></label>
<div id="results"></div>
<script>
const results = document.getElementById("results"), drop = document.getElementById("drop");
fetch("model").then(r => r.json()).then(m => {
  document.getElementById("model").innerHTML = "<small>" + m.arch + ", " + m.classes.length + " classes, " +
    m.tta_views + " TTA view(s), " + m.backend + "</small>";
});
function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
async function classify(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  let body;
  try {
    const r = await fetch("predict?top_k=3", {method: "POST", body: form});
    body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
  } catch (e) {
    results.insertAdjacentHTML("afterbegin", '<p class="err">' + esc(String(e.message || e)) + "</p>");
    return;
  }
  const cards = document.createDocumentFragment();  // newest request on top, its images in order
  body.predictions.forEach((p, i) => {
    const card = document.createElement("div");
    card.className = "card";
    const img = document.createElement("img");
    img.src = URL.createObjectURL(files[i]);
    img.alt = p.file;
    const text = document.createElement("div");
    text.innerHTML = '<div class="label">' + esc(p.top[0].label) + "</div>" +
      (p.ambiguous ? '<div class="amb">ambiguous: margin ' + p.margin.toFixed(2) + "</div>" : "") +
      p.top.map(t => esc(t.label) + " " + (100 * t.score).toFixed(1) + '%<div class="bar"><div style="width:' +
        (100 * t.score).toFixed(1) + '%"></div></div>').join("") + "<small>" + esc(p.file) + "</small>";
    card.append(img, text);
    cards.append(card);
  });
  results.prepend(cards);
}
document.getElementById("pick").addEventListener("change", e => classify([...e.target.files]));
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over");
  classify([...e.dataTransfer.files].filter(f => f.type.startsWith("image/"))); });
</script></body></html>
"""
