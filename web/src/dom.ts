// A tiny DOM helper: elements from tag + attributes + children, with no HTML strings (so nothing the
// hub sends is ever parsed as markup).

type Child = Node | string | number | null | undefined | false;
type Handler = (ev: Event) => void;

export interface Attrs {
  class?: string;
  text?: string;
  title?: string;
  id?: string;
  href?: string;
  role?: string;
  type?: string;
  value?: string;
  name?: string;
  for?: string;
  hidden?: boolean;
  disabled?: boolean;
  tabindex?: number;
  dataset?: Record<string, string>;
  aria?: Record<string, string>;
  style?: Partial<Record<string, string>>;
  on?: Record<string, Handler>;
  attrs?: Record<string, string>;
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    if (attrs.class) el.className = attrs.class;
    if (attrs.text !== undefined) el.textContent = attrs.text;
    if (attrs.title) el.title = attrs.title;
    if (attrs.id) el.id = attrs.id;
    if (attrs.href !== undefined) el.setAttribute("href", attrs.href);
    if (attrs.role) el.setAttribute("role", attrs.role);
    if (attrs.type) el.setAttribute("type", attrs.type);
    if (attrs.name) el.setAttribute("name", attrs.name);
    if (attrs.for) el.setAttribute("for", attrs.for);
    if (attrs.value !== undefined) (el as HTMLInputElement).value = attrs.value;
    if (attrs.hidden) el.hidden = true;
    if (attrs.disabled) (el as HTMLButtonElement).disabled = true;
    if (attrs.tabindex !== undefined) el.tabIndex = attrs.tabindex;
    if (attrs.dataset) for (const [k, v] of Object.entries(attrs.dataset)) el.dataset[k] = v;
    if (attrs.aria) for (const [k, v] of Object.entries(attrs.aria)) el.setAttribute(`aria-${k}`, v);
    if (attrs.style) for (const [k, v] of Object.entries(attrs.style)) if (v !== undefined) el.style.setProperty(k, v);
    if (attrs.attrs) for (const [k, v] of Object.entries(attrs.attrs)) el.setAttribute(k, v);
    if (attrs.on) for (const [k, fn] of Object.entries(attrs.on)) el.addEventListener(k, fn);
  }
  append(el, ...children);
  return el;
}

export function append(el: Element, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "number" ? String(c) : c);
  }
}

/** Replace every child of `el`. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, ...children);
}

/** Set text only when it changed (a DOM write costs more than a comparison). */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** A function that runs `fn` at most once per animation frame. */
export function frameThrottle(fn: () => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

export function debounce<A extends unknown[]>(fn: (...args: A) => void, ms: number): (...args: A) => void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  return (...args: A) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
}
