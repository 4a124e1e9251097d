export type { PodClass, ProxySync, IstiodSource, Ineligible } from "./types.js";
