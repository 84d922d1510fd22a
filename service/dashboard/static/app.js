// rarefit dashboard: plain ES module, no build step. Every call goes to the same /v1 API with the
// signed-in key, so the API's tenant scoping is the dashboard's too. Charts are uPlot instances,
// kept in window.rarefit.charts so their data can be read (by people and by the browser test).
const KEY = "rarefit-api-key";
const main = document.getElementById("main");
const signIn = main.innerHTML;
window.rarefit = { charts: {} };

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (v) => (typeof v === "number" ? v.toFixed(4) : esc(v ?? "–"));

// The response of a call with the signed-in key; a refused key signs out, an error answer throws its problem.
async function call(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { signOut(); throw new Error("the key was refused"); }
  if (!response.ok) {
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    throw new Error(`${response.status} ${body?.title ?? ""}: ${body?.detail ?? ""}`);
  }
  return response;
}

async function api(path, options = {}) {
  const response = await call(path, options);
  return response.headers.get("content-type")?.includes("json") ? response.json() : null;
}

function signOut() { sessionStorage.removeItem(KEY); location.hash = ""; render(); }

function chart(name, target, series, data, extra = {}) {
  window.rarefit.charts[name]?.destroy();
  const opts = { width: Math.min(720, innerWidth - 60), height: 280, scales: { x: { time: false } }, series, ...extra };
  window.rarefit.charts[name] = new uPlot(opts, data, target);
  return window.rarefit.charts[name];
}

async function datasetsPage(id) {
  const page = await api("/v1/datasets?limit=100");
  const rows = page.items.map((d) => {
    const splits = Object.entries(d.splits).map(([split, s]) => {
      const most = Math.max(...s.class_counts, 1);
      const bars = s.class_counts.map((c, i) => `${esc(d.class_names[i])} <span class="bar" style="width:${(80 * c) / most}px"></span> ${c}`);
      return `<div><b>${esc(split)}</b> ${bars.join(" ")}</div>`;
    });
    return `<tr${d.id === id ? ' class="selected"' : ""}><td><a href="#/datasets/${esc(d.id)}">${esc(d.name)}</a><br><small>${esc(d.id)}</small></td>
      <td>${d.num_classes}</td><td>${fmt(d.imbalance_ratio)}</td><td>${splits.join("")}</td></tr>`;
  });
  main.innerHTML = `<h1>Datasets</h1>
    <form id="upload-form" class="card"><input id="upload-file" type="file" required>
      <input id="upload-name" placeholder="name (optional)"> <button type="submit">Upload</button>
      <span id="upload-status"></span></form>
    <table id="datasets"><tr><th>name</th><th>classes</th><th>imbalance</th><th>class counts per split</th></tr>
    ${rows.join("")}</table><div id="dataset-detail"></div>`;
  document.getElementById("upload-form").onsubmit = async (e) => {
    e.preventDefault();
    const form = new FormData();
    form.append("file", document.getElementById("upload-file").files[0]);
    const name = document.getElementById("upload-name").value;
    if (name) form.append("name", name);
    document.getElementById("upload-status").textContent = "uploading…";
    try { const d = await api("/v1/datasets", { method: "POST", body: form }); location.hash = `#/datasets/${d.id}`; }
    catch (err) { document.getElementById("upload-status").textContent = err.message; }
  };
  if (id) await datasetDetail(page.items.find((d) => d.id === id) ?? (await api(`/v1/datasets/${id}`)));
}

// One dataset under the list: what the upload found (diagnostics, advice) and a grid of images per class.
async function datasetDetail(d) {
  const options = Object.keys(d.splits).map((s) => `<option>${esc(s)}</option>`).join("");
  const advice = (d.advice ?? []).map((a) => `<tr><td><code>${esc(a.code)}</code></td><td>${esc(a.message)}</td>
    <td>${Object.entries(a.suggested).map(([k, v]) => `<code>${esc(k)}: ${esc(JSON.stringify(v))}</code>`).join("<br>") || "fix in the data"}</td></tr>`);
  const found = d.diagnostics ? findings(d.diagnostics) : ["not recorded (uploaded before diagnostics existed)"];
  document.getElementById("dataset-detail").innerHTML = `<h2>${esc(d.name)}</h2>
    <div class="card" id="diagnostics"><h3>Diagnostics</h3>
      <ul>${(found.length ? found : ["nothing found: no duplicates, missing classes, tiny val/test classes or blank images"]).map((f) => `<li>${f}</li>`).join("")}</ul>
      ${advice.length ? `<table id="advice"><tr><th>advice</th><th>message</th><th>suggested spec fields</th></tr>${advice.join("")}</table>` : ""}</div>
    <div class="card"><h3>Sample images per class</h3>
      <p>split <select id="samples-split">${options}</select> <span id="samples-status"></span></p>
      <img id="samples" alt="the first images of each class, a row per class"></div>`;
  const img = document.getElementById("samples");
  const show = async (split) => {
    try {
      const blob = await (await call(`/v1/datasets/${d.id}/samples.png?split=${encodeURIComponent(split)}&per_class=8`)).blob();
      const url = URL.createObjectURL(blob);  // an <img src> cannot send the key, so the bytes come by fetch
      img.onload = () => URL.revokeObjectURL(url);
      img.src = url;
      document.getElementById("samples-status").textContent = "";
    } catch (err) { document.getElementById("samples-status").textContent = err.message; }
  };
  document.getElementById("samples-split").onchange = (e) => show(e.target.value);
  await show(Object.keys(d.splits)[0]);
}

// The diagnostics' facts as short sentences (HTML-escaped).
function findings(g) {
  const items = [];
  for (const a of g.duplicates?.across ?? []) items.push(`${a.images} image(s) in both ${esc(a.splits.join(" and "))}`);
  for (const [split, w] of Object.entries(g.duplicates?.within ?? {})) {
    if (w.groups) items.push(`${esc(split)}: ${w.images} images in ${w.groups} group(s) of exact duplicates`);
  }
  if (g.duplicates?.label_conflicts?.groups) items.push(`${g.duplicates.label_conflicts.groups} duplicate group(s) carry different labels`);
  for (const s of g.small_support ?? []) {
    items.push(`${esc(s.split)}: class ${esc(s.class)} has only ${s.support} image(s); even a perfect recall bounds the true one only from ${fmt(s.recall_lower_bound_if_perfect)}`);
  }
  for (const [split, names] of Object.entries(g.missing_classes ?? {})) items.push(`${esc(split)} has no image of ${esc(names.join(", "))}`);
  for (const [split, c] of Object.entries(g.constant_images ?? {})) {
    items.push(`${esc(split)}: ${c.images} constant (blank?) image(s), e.g. index ${esc(c.examples.join(", "))}`);
  }
  return items;
}

async function jobsPage() {
  const [jobs, datasets] = await Promise.all([api("/v1/jobs?limit=100"), api("/v1/datasets?limit=100")]);
  const options = datasets.items.map((d) => `<option value="${esc(d.id)}">${esc(d.name)}</option>`).join("");
  const rows = jobs.items.map((j) => `<tr><td><a href="#/jobs/${esc(j.id)}">${esc(j.id)}</a></td>
    <td class="status">${esc(j.status)}</td><td>${j.progress.epoch}/${j.progress.epochs}</td>
    <td>${esc(j.spec.model?.arch)}</td><td>${esc(j.created_at)}</td></tr>`);
  main.innerHTML = `<h1>Jobs</h1>
    <form id="job-form" class="card">dataset <select id="job-dataset">${options}</select>
      architecture <select id="job-arch"><option>simple_cnn</option><option>resnet18</option>
      <option>mobilenet_v3_small</option></select>
      epochs <input id="job-epochs" type="number" min="1" value="5" style="width:4em">
      <button type="submit">Start training</button> <span id="job-error" class="error"></span></form>
    <table id="jobs"><tr><th>job</th><th>status</th><th>epochs</th><th>model</th><th>created</th></tr>
    ${rows.join("")}</table>`;
  document.getElementById("job-form").onsubmit = async (e) => {
    e.preventDefault();
    const spec = {
      dataset_id: document.getElementById("job-dataset").value,
      model: { arch: document.getElementById("job-arch").value },
      epochs: Number(document.getElementById("job-epochs").value),
    };
    try {
      const job = await api("/v1/jobs", { method: "POST", body: JSON.stringify(spec), headers: { "Content-Type": "application/json" } });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) { document.getElementById("job-error").textContent = err.message; }
  };
}

// Server-Sent Events over fetch (EventSource cannot send the Authorization header); resumes with
// Last-Event-ID after a dropped connection and returns when the server ends the stream (job ended).
async function follow(jobId, onEvent, signal) {
  let last = null;
  for (;;) {
    try {
      const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, ...(last ? { "Last-Event-ID": last } : {}) };
      const response = await fetch(`/v1/jobs/${jobId}/events`, { headers, signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "", fields = {};
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        const lines = buffer.split(/\r\n|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "" && fields.data) { last = fields.id; onEvent(fields.event, JSON.parse(fields.data)); fields = {}; }
          else if (line && !line.startsWith(":")) { const at = line.indexOf(":"); fields[line.slice(0, at)] = line.slice(at + 1).trimStart(); }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

async function jobPage(id, signal) {
  const job = await api(`/v1/jobs/${id}`);
  const metric = job.spec.selection_metric || "balanced_accuracy";
  main.innerHTML = `<h1>Job <small>${esc(id)}</small></h1>
    <div class="card">status <b id="job-status">${esc(job.status)}</b>, epoch <b id="job-epoch">${job.progress.epoch}</b>
      of ${job.progress.epochs} <span id="job-detail"></span></div>
    <div class="card"><h3>Training curves</h3><div id="curves"></div>
      <p id="epoch-info"></p></div><div id="final"></div>`;
  const data = [[], [], [], []];
  const curves = chart("curves", document.getElementById("curves"),
    [{ label: "epoch" }, { label: "train_loss", stroke: "#4a78c2" }, { label: "val_loss", stroke: "#c2584a" },
      { label: metric, stroke: "#3a9a5b", scale: "metric" }], data,
    { axes: [{}, { label: "loss" }, { scale: "metric", side: 1, grid: { show: false } }] });
  await follow(id, (kind, event) => {
    if (kind === "status") {
      document.getElementById("job-status").textContent = event.status;
      if (event.error) document.getElementById("job-detail").textContent = `${event.error.type}: ${event.error.message}`;
      return;
    }
    const at = data[0].indexOf(event.epoch);  // a resumed job repeats an epoch: replace it
    const row = [event.epoch, event.train_loss, event.val_loss, event.val?.[metric] ?? null];
    row.forEach((v, i) => (at >= 0 ? (data[i][at] = v) : data[i].push(v)));
    curves.setData(data);
    document.getElementById("job-epoch").textContent = event.epoch;
    document.getElementById("epoch-info").textContent = `lr ${fmt(event.lr)}, ${fmt(event.seconds)} s per epoch`;
  }, signal);
  if (!signal.aborted) await finalPanels(id);
}

async function finalPanels(id) {
  const metrics = await api(`/v1/jobs/${id}/metrics`);
  const test = metrics.test;
  if (!test) return;
  const final = document.getElementById("final");
  final.innerHTML = `<div class="row"><div class="card"><h3>PR curve (test)</h3><div id="pr-chart"></div></div>
    <div class="card"><h3>Confusion matrix (row-normalised, test)</h3><table id="confusion" class="cm"></table>
    <h3>Recall against class frequency</h3><table id="per-class"></table></div></div>
    <div class="row"><div class="card" id="roc-card" hidden><h3>ROC curve (test)</h3><div id="roc-chart"></div></div>
    <div class="card" id="reliability-card" hidden><h3>Reliability (test)</h3><div id="reliability-chart"></div></div></div>
    <div class="card">best epoch ${metrics.best_epoch}; balanced accuracy ${fmt(test.balanced_accuracy)}, macro F1
      ${fmt(test.macro_f1)}, AUROC ${fmt(test.auroc)}, AP ${fmt(test.average_precision)}, threshold ${fmt(test.threshold)}</div>`;
  const unit = { scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } } };
  const chance = { label: "chance", stroke: "#999", dash: [5, 5] };
  if (test.pr_curve) {
    const points = [...test.pr_curve].sort((a, b) => a.recall - b.recall);
    chart("pr", document.getElementById("pr-chart"), [{ label: "recall" }, { label: "precision", stroke: "#4a78c2" }],
      [points.map((p) => p.recall), points.map((p) => p.precision)], unit);
  }
  if (test.roc_curve) {  // the curve starts at the origin, a threshold above every score (not a recorded point)
    const fpr = [0, ...test.roc_curve.map((p) => p.fpr)];
    document.getElementById("roc-card").hidden = false;
    chart("roc", document.getElementById("roc-chart"), [{ label: "false positive rate" }, chance,
      { label: "true positive rate", stroke: "#4a78c2" }], [fpr, fpr, [0, ...test.roc_curve.map((p) => p.tpr)]], unit);
  }
  const calibration = test.calibration;
  if (calibration && calibration.method !== "none") {  // accuracy per confidence bin, drawn at the bin's middle
    const bins = calibration.reliability_after;
    const middle = bins.map((b) => (b.lower + b.upper) / 2);
    const dots = { points: { show: true, size: 7 } };
    document.getElementById("reliability-card").hidden = false;
    chart("reliability", document.getElementById("reliability-chart"), [{ label: "confidence" }, chance,
      { label: `before (ECE ${fmt(calibration.ece_before)})`, stroke: "#c2584a", ...dots },
      { label: `after T=${fmt(calibration.temperature)} (ECE ${fmt(calibration.ece_after)})`, stroke: "#4a78c2", ...dots }],
      [middle, middle, calibration.reliability_before.map((b) => b.accuracy), bins.map((b) => b.accuracy)], unit);
  }
  const names = test.per_class.map((c) => c.class);
  const rows = test.confusion_matrix.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return `<tr><th>${esc(names[i])}</th>${row.map((n) => `<td style="background:rgba(74,120,194,${n / total})">${(n / total).toFixed(2)}</td>`).join("")}</tr>`;
  });
  document.getElementById("confusion").innerHTML = `<tr><th>true \\ predicted</th>${names.map((n) => `<th>${esc(n)}</th>`).join("")}</tr>${rows.join("")}`;
  const support = test.per_class.reduce((a, c) => a + c.support, 0) || 1;
  document.getElementById("per-class").innerHTML = `<tr><th>class</th><th>frequency</th><th>recall</th></tr>` +
    test.per_class.map((c) => `<tr><td>${esc(c.class)}</td><td>${(c.support / support).toFixed(3)}</td><td>${fmt(c.recall)}</td></tr>`).join("");
}

async function modelsPage() {
  const page = await api("/v1/models?limit=100");
  main.innerHTML = `<h1>Models</h1><table id="models"><tr><th>model</th><th>arch</th><th>classes</th><th>threshold</th>
    <th>balanced accuracy</th></tr>${page.items.map((m) => `<tr><td><a href="#/models/${esc(m.id)}">${esc(m.id)}</a></td>
    <td>${esc(m.arch)}</td><td>${esc(m.class_names.join(", "))}</td><td>${fmt(m.threshold)}</td>
    <td>${fmt(m.metrics.balanced_accuracy)}</td></tr>`).join("")}</table>`;
}

async function modelPage(id) {
  const model = await api(`/v1/models/${id}`);
  main.innerHTML = `<h1>Model <small>${esc(id)}</small></h1>
    <div class="card">${esc(model.arch)}, classes ${esc(model.class_names.join(", "))}, input ${esc(model.input_shape.join("×"))},
      operating threshold ${fmt(model.threshold)} (positive class ${esc(model.positive_class)}), from job
      <a href="#/jobs/${esc(model.source_job_id)}">${esc(model.source_job_id)}</a></div>
    <div id="drop">Drop images here, or <input id="predict-file" type="file" accept="image/*" multiple></div>
    <table id="prediction"></table>`;
  const predict = async (files) => {
    const form = new FormData();
    [...files].forEach((f) => form.append("files", f));
    const table = document.getElementById("prediction");
    try {
      const answer = await api(`/v1/models/${id}/predict`, { method: "POST", body: form });
      table.innerHTML = `<tr><th>image</th><th>label</th>${model.class_names.map((c) => `<th>p(${esc(c)})</th>`).join("")}</tr>` +
        answer.predictions.map((p, i) => `<tr><td>${esc(files[i].name)}</td><td class="label">${esc(p.label)}</td>
          ${model.class_names.map((c) => `<td>${fmt(p.probabilities[c])}</td>`).join("")}</tr>`).join("");
    } catch (err) { table.innerHTML = `<tr><td class="error">${esc(err.message)}</td></tr>`; }
  };
  const drop = document.getElementById("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); predict(e.dataTransfer.files); };
  document.getElementById("predict-file").onchange = (e) => predict(e.target.files);
}

const summary = (s) => (s && s.mean != null ? `${fmt(s.mean)} ± ${fmt(s.std)}` : "–");

async function experimentsPage() {
  const page = await api("/v1/experiments?limit=100");
  main.innerHTML = `<h1>Experiments</h1><table id="experiments"><tr><th>experiment</th><th>name</th><th>status</th>
    <th>created</th></tr>${page.items.map((e) => `<tr><td><a href="#/experiments/${esc(e.id)}">${esc(e.id)}</a></td>
    <td>${esc(e.name)}</td><td>${esc(e.status)}</td><td>${esc(e.created_at)}</td></tr>`).join("")}</table>`;
}

async function experimentPage(id) {
  const e = await api(`/v1/experiments/${id}`);
  const rows = e.leaderboard.map((r) => `<tr><td>${r.rank ?? "–"}</td><td>${r.trial}</td><td>${esc(r.state)}</td>
    <td><code>${esc(JSON.stringify(r.params))}</code></td><td>${summary(r.val.objective)}</td><td>${summary(r.test.objective)}</td>
    <td>${r.within_noise_of_best === true ? "within noise of best" : r.within_noise_of_best === false ? "" : "–"}</td></tr>`);
  main.innerHTML = `<h1>Experiment <small>${esc(e.name)}</small></h1>
    <div class="card">status <b>${esc(e.status)}</b>, trials ${e.progress.trials_done}/${e.progress.trials_total}
      ${e.best ? `; best trial ${e.best.trial} (model <a href="#/models/${esc(e.best.model_id)}">${esc(e.best.model_id)}</a>)` : ""}</div>
    <table id="leaderboard"><tr><th>rank</th><th>trial</th><th>state</th><th>params</th><th>val objective (mean ± std)</th>
      <th>test objective</th><th>noise</th></tr>${rows.join("")}</table>
    <div class="card"><h3>Validation <span id="trial-metric"></span> per trial (first seed)</h3><div id="trial-curves"></div></div>`;
  // A per-class objective lives inside per_class; the curves then show balanced accuracy.
  const objective = e.request.objective || {};
  const metric = objective.class == null ? objective.metric || "balanced_accuracy" : "balanced_accuracy";
  document.getElementById("trial-metric").textContent = metric;
  const histories = await Promise.all(e.leaderboard.map((r) => r.jobs[0] ? api(`/v1/jobs/${r.jobs[0].job_id}/metrics`) : null));
  const epochs = Math.max(0, ...histories.map((h) => h?.history.length ?? 0));
  const xs = Array.from({ length: epochs }, (_, i) => i + 1);
  const lines = histories.map((h) => xs.map((x) => h?.history.find((row) => row.epoch === x)?.val?.[metric] ?? null));
  chart("trials", document.getElementById("trial-curves"),
    [{ label: "epoch" }, ...e.leaderboard.map((r, i) => ({ label: `trial ${r.trial}`, stroke: `hsl(${(i * 67) % 360} 60% 45%)` }))],
    [xs, ...lines]);
}

let current = new AbortController();
async function render() {
  current.abort();
  current = new AbortController();
  if (!sessionStorage.getItem(KEY)) {
    document.getElementById("nav").hidden = true;
    main.innerHTML = signIn;
    document.getElementById("sign-in-form").onsubmit = async (e) => {
      e.preventDefault();
      const key = document.getElementById("api-key").value.trim();
      const check = await fetch("/v1/jobs?limit=1", { headers: { Authorization: `Bearer ${key}` } });
      if (!check.ok) { document.getElementById("sign-in-error").textContent = `that key was refused (${check.status})`; return; }
      sessionStorage.setItem(KEY, key);
      location.hash = "#/jobs";
      render();
    };
    return;
  }
  document.getElementById("nav").hidden = false;
  const [, page, id] = location.hash.split("/");
  const pages = {
    datasets: () => datasetsPage(id),
    jobs: id ? () => jobPage(id, current.signal) : jobsPage,
    models: id ? () => modelPage(id) : modelsPage,
    experiments: id ? () => experimentPage(id) : experimentsPage,
  };
  try { await (pages[page] || jobsPage)(); }
  catch (err) { main.innerHTML = `<p class="error">${esc(err.message)}</p>`; }
}

document.getElementById("sign-out").onclick = signOut;
addEventListener("hashchange", render);
render();
