// gen3d report viewer: the exported GLB with orbit / zoom (three.js OrbitControls), a model
// (particle) selector and albedo / lit shading. Works from file://: each GLB comes as a classic
// script (report_files/model-<i>.js) that stores its base64 bytes in window.GEN3D_GLB.
(function () {
  "use strict";
  const T = window.GEN3D_THREE;
  const data = JSON.parse(document.getElementById("gen3d-viewer-data").textContent);
  const canvas = document.getElementById("viewer");
  const select = document.getElementById("viewer-model");
  const shadingBox = document.getElementById("viewer-lit");
  const status = document.getElementById("viewer-status");
  window.GEN3D_GLB = window.GEN3D_GLB || {};

  const renderer = new T.WebGLRenderer({ canvas: canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(canvas.width, canvas.height, false);
  const scene = new T.Scene();
  scene.background = new T.Color().setRGB(data.background[0], data.background[1], data.background[2], T.SRGBColorSpace);
  const camera = new T.PerspectiveCamera(data.fovy, canvas.width / canvas.height, 0.01, 100);
  const el = data.elevation * Math.PI / 180;
  camera.position.set(0, data.distance * Math.sin(el), data.distance * Math.cos(el));
  scene.add(new T.HemisphereLight(0xffffff, 0x444444, 1.5));
  const sun = new T.DirectionalLight(0xffffff, 1.5);
  sun.position.set(2, 3, 2);
  scene.add(sun);
  const controls = new T.OrbitControls(camera, canvas);
  controls.target.set(0, 0, 0);
  controls.update();

  let current = null;
  const viewer = { state: "loading", model: null, vertices: 0, frames: 0 };
  window.gen3dViewer = viewer;

  function render() {
    renderer.render(scene, camera);
    viewer.frames += 1;
  }
  controls.addEventListener("change", render);

  function applyShading() {
    if (!current) return;
    const lit = shadingBox && shadingBox.checked;
    current.traverse(function (obj) {
      if (!obj.isMesh) return;
      obj.userData.litMaterial = obj.userData.litMaterial || obj.material;
      if (!obj.userData.flatMaterial) {
        obj.userData.flatMaterial = new T.MeshBasicMaterial({ map: obj.material.map || null,
          color: obj.material.map ? 0xffffff : obj.material.color });
      }
      obj.material = lit ? obj.userData.litMaterial : obj.userData.flatMaterial;
    });
    render();
  }

  function decode(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function show(index, b64) {
    new T.GLTFLoader().parse(decode(b64), "", function (gltf) {
      if (current) scene.remove(current);
      current = gltf.scene;
      scene.add(current);
      let vertices = 0;
      current.traverse(function (obj) { if (obj.isMesh) vertices += obj.geometry.attributes.position.count; });
      viewer.vertices = vertices;
      viewer.model = data.models[index].label;
      viewer.state = "ready";
      status.textContent = data.models[index].label;
      applyShading();
    }, function (err) {
      viewer.state = "error";
      status.textContent = "could not read the GLB: " + err;
      console.error("gen3d viewer: " + err);
    });
  }

  function load(index) {
    const m = data.models[index];
    viewer.state = "loading";
    if (window.GEN3D_GLB[m.key]) return show(index, window.GEN3D_GLB[m.key]);
    const tag = document.createElement("script");
    tag.src = m.src;
    tag.onload = function () { show(index, window.GEN3D_GLB[m.key]); };
    tag.onerror = function () { viewer.state = "error"; status.textContent = "missing " + m.src; };
    document.head.appendChild(tag);
  }

  viewer.select = function (index) { select.value = String(index); load(index); };
  viewer.snapshot = function () { render(); return canvas.toDataURL("image/png"); };
  select.addEventListener("change", function () { load(parseInt(select.value, 10)); });
  if (shadingBox) shadingBox.addEventListener("change", applyShading);
  load(0);
})();
