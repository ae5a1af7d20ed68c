// The subset of three.js the gen3d report viewer uses, bundled as one classic script (IIFE) so the
// report opens from file:// (Chromium does not load ES modules from file://).
export {
  WebGLRenderer, Scene, PerspectiveCamera, Color, AmbientLight, DirectionalLight, HemisphereLight,
  Box3, Vector3, MeshBasicMaterial, SRGBColorSpace,
} from "three";
export { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
export { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
