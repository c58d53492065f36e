// A small application: every function bundles the whole of it.
export { application } from "./index.ts";
