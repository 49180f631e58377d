// A bounded, auto-scrolling log list. While the reader is at the bottom, new lines are appended and the
// list follows them; once they scroll up it stops moving, holds new lines aside (bounded too) and shows
// "N new lines — jump to latest". Never more than `max` lines in the DOM or held aside.

import { h, setText } from "../dom";
import { time } from "../format";
import { t } from "../i18n";
import type { LogRecord } from "../types";

export class LogList {
  readonly el: HTMLElement;
  readonly scroller: HTMLElement;
  private readonly jumpButton: HTMLButtonElement;
  private pending: LogRecord[] = [];
  private newCount = 0;
  private paused = false;
  private count = 0;
  // Where the list last put its own scroll position (following new lines): the reader has scrolled up
  // only when the position is above it. A change of the scroller's height (a notice above it appearing,
  // the window resizing) moves the bottom, not the position, so it never pauses the list.
  private followTop = 0;

  constructor(readonly max: number, readonly showServer = true, label = t("logs.title")) {
    this.scroller = h("div", { class: "log-scroller", role: "log", tabindex: 0, aria: { label, live: "off" },
      dataset: { paused: "false" } });
    this.jumpButton = h("button", { class: "jump-latest", type: "button", hidden: true,
      on: { click: () => this.jump() } });
    this.el = h("div", { class: "log-list" }, this.scroller, this.jumpButton);
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
  }

  private atBottom(): boolean {
    const s = this.scroller;
    return s.scrollTop + s.clientHeight >= s.scrollHeight - 8;
  }

  private scrolledUp(): boolean {
    return this.scroller.scrollTop < this.followTop - 8 && !this.atBottom();
  }

  private follow(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.followTop = this.scroller.scrollTop;
  }

  private onScroll(): void {
    if (this.atBottom()) {
      if (this.paused) this.jump();
      else this.followTop = this.scroller.scrollTop;
    } else if (!this.paused && this.scrolledUp()) {
      this.paused = true;
      this.scroller.dataset.paused = "true";
    }
  }

  /** Lines on screen (for tests and the status line). */
  get size(): number {
    return this.count;
  }

  add(records: LogRecord[]): void {
    if (!records.length) return;
    // The reader may have scrolled up since the last scroll event was handled (events come a frame
    // later): never pull them back down.
    if (!this.paused && this.count > 0 && this.scrolledUp()) {
      this.paused = true;
      this.scroller.dataset.paused = "true";
    }
    if (this.paused) {
      this.pending.push(...records);
      if (this.pending.length > this.max) this.pending.splice(0, this.pending.length - this.max);
      this.newCount += records.length;
      this.jumpButton.hidden = false;
      this.jumpButton.dataset.count = String(this.newCount);
      setText(this.jumpButton, t("logs.newLines", { count: this.newCount }));
      return;
    }
    this.appendNodes(records);
    this.follow();
  }

  private appendNodes(records: LogRecord[]): void {
    const frag = document.createDocumentFragment();
    const from = Math.max(0, records.length - this.max);
    for (let i = from; i < records.length; i++) frag.append(this.line(records[i]));
    this.scroller.append(frag);
    this.count += records.length - from;
    while (this.count > this.max && this.scroller.firstElementChild) {
      this.scroller.firstElementChild.remove();
      this.count -= 1;
    }
    this.scroller.dataset.lines = String(this.count);
  }

  private line(r: LogRecord): HTMLElement {
    const level = String(r.level).toUpperCase();
    // Level, server, service and message are the record's own (data, as written); only the time is formatted.
    const asWritten = { translate: "no" };
    return h("div", { class: `log-line lvl-${level}` },
      h("time", { text: time(r.ts), attrs: { datetime: new Date(r.ts).toISOString() } }),
      h("span", { class: "lvl", text: level, attrs: asWritten }),
      this.showServer ? h("a", { class: "srv", href: `#/servers/${encodeURIComponent(r.server)}`, text: r.server, tabindex: -1, attrs: asWritten }) : null,
      h("span", { class: "svc", text: r.service, attrs: asWritten }),
      h("span", { class: "msg", text: r.message, attrs: asWritten }));
  }

  /** Show everything held aside and follow new lines again. */
  jump(): void {
    const held = this.pending;
    this.pending = [];
    this.newCount = 0;
    this.paused = false;
    this.scroller.dataset.paused = "false";
    this.jumpButton.hidden = true;
    this.jumpButton.dataset.count = "0";
    if (held.length) this.appendNodes(held);
    this.follow();
  }

  clear(): void {
    this.pending = [];
    this.newCount = 0;
    this.count = 0;
    this.scroller.replaceChildren();
    this.scroller.dataset.lines = "0";
    this.jump();
  }
}
