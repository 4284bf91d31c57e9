// The page: choose or drop a photo, POST it to /v1/segment?include=map, draw each head's classes over it.
"use strict";
const $ = (id) => document.getElementById(id);
let models = {};   // name -> /v1/models entry
let answer = null; // the last JSON answer
let maps = {};     // head -> Uint16Array (class id + 1, 0: none)
let shown = null;  // the head on show

function fail(message) {
  $("status").textContent = "";
  $("error").textContent = message;
  $("error").hidden = false;
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    for (const m of await response.json()) {
      models[m.name] = m;
      const option = new Option(`${m.name} (${m.task})`, m.name, m.default, m.default);
      $("model").add(option);
    }
  } catch (err) {
    fail(`Could not list the models: ${err.message}`);
  }
}

function decodeMap(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Uint16Array(bytes.buffer);
}

function rgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function drawHead(head) {
  shown = head;
  for (const b of $("heads").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.head === head));
  const canvas = $("overlay");
  const { width, height } = answer;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(width, height);
  const colors = models[answer.model].heads[head].colors.map(rgb);
  const map = maps[head];
  for (let i = 0; i < map.length; i++) {
    if (map[i] === 0) continue;
    const [r, g, b] = colors[map[i] - 1];
    pixels.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(pixels, 0, 0);
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of answer.heads[head].classes) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = models[answer.model].heads[head].colors[c.id];
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = c.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = `${(100 * c.share).toFixed(1)}%`;
    item.append(swatch, label, share);
    legend.append(item);
  }
}

function showAnswer() {
  maps = {};
  for (const [head, value] of Object.entries(answer.heads)) maps[head] = decodeMap(value.map);
  const heads = $("heads");
  heads.replaceChildren();
  const names = Object.keys(answer.heads);
  if (names.length > 1) {
    for (const head of names) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.head = head;
      button.textContent = head;
      button.addEventListener("click", () => drawHead(head));
      heads.append(button);
    }
  }
  const scene = $("scene");
  scene.hidden = !answer.scenes;
  if (answer.scenes) scene.textContent = `Scene: ${answer.scenes[0].name} (${(100 * answer.scenes[0].probability).toFixed(1)}%)`;
  drawHead(names[0]);
  $("result").hidden = false;
  $("status").textContent = `${answer.width} x ${answer.height}, segmented by ${answer.model} in ${answer.seconds.toFixed(2)} s`;
}

async function segment(file) {
  $("error").hidden = true;
  $("status").textContent = `Segmenting ${file.name} ...`;
  try {
    const bitmap = await createImageBitmap(file, { imageOrientation: "none" }); // as the server decodes it
    const photo = $("photo");
    photo.width = bitmap.width;
    photo.height = bitmap.height;
    photo.getContext("2d").drawImage(bitmap, 0, 0);
    const model = encodeURIComponent($("model").value);
    const response = await fetch(`/v1/segment?model=${model}&include=map`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `the server answered ${response.status}`);
    answer = body;
    showAnswer();
  } catch (err) {
    fail(`Could not segment ${file.name}: ${err.message}`);
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) segment(event.target.files[0]);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) segment(event.dataTransfer.files[0]);
});
$("opacity").addEventListener("input", (event) => { $("overlay").style.opacity = event.target.value / 100; });
$("overlay").style.opacity = $("opacity").value / 100;
$("overlay").addEventListener("mousemove", (event) => {
  if (!answer || !shown) return;
  const box = event.target.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * answer.width);
  const y = Math.floor(((event.clientY - box.top) / box.height) * answer.height);
  if (x < 0 || y < 0 || x >= answer.width || y >= answer.height) return;
  const label = maps[shown][y * answer.width + x];
  const names = models[answer.model].heads[shown].classes;
  $("pointer").textContent = label ? `${names[label - 1]} (${shown}, x ${x}, y ${y})` : `no class (x ${x}, y ${y})`;
});
loadModels();
