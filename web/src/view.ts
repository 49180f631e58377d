import type { Live } from "./live";
import type { Me } from "./types";

export interface Ctx {
  live: Live;
  me: Me;
}

/** A mounted view: its root element, and a destroy that removes every listener and timer it made. */
export interface View {
  el: HTMLElement;
  /** called once the element is in the document (charts need their size) */
  mounted?(): void;
  destroy(): void;
}

export type ViewFactory = (ctx: Ctx, params: string[]) => View;
