import { lang } from "./i18n";

export function pct(v: number | null | undefined): string {
  return v === null || v === undefined ? "–" : `${v.toFixed(1)}%`;
}

export function num(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return v.toLocaleString(lang() === "ko" ? "ko-KR" : "en-US", { maximumFractionDigits: digits });
}

export function bytes(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let x = v;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 1 : 0)} ms`;
}

export function time(tsMs: number | null | undefined): string {
  if (!tsMs) return "–";
  return new Date(tsMs).toLocaleTimeString(lang() === "ko" ? "ko-KR" : "en-GB", { hour12: false });
}

export function dateTime(tsMs: number | null | undefined): string {
  if (!tsMs) return "–";
  return new Date(tsMs).toLocaleString(lang() === "ko" ? "ko-KR" : "en-GB", { hour12: false });
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  return `${mm}m ${s % 60}s`;
}

/** "12 s ago", "3 min ago" — short, language-neutral enough for both UIs. */
export function ago(tsMs: number | null | undefined, now = Date.now()): string {
  if (!tsMs) return "–";
  const s = Math.max(0, Math.round((now - tsMs) / 1000));
  if (lang() === "ko") return s < 60 ? `${s}초 전` : s < 3600 ? `${Math.floor(s / 60)}분 전` : `${Math.floor(s / 3600)}시간 전`;
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago` : `${Math.floor(s / 3600)} h ago`;
}

/** Compact bytes for chart axes: 950, 13.8K, 2.1M, 1.0G. */
export function compactBytes(v: number): string {
  const a = Math.abs(v);
  if (a >= 1024 ** 3) return `${(v / 1024 ** 3).toFixed(1)}G`;
  if (a >= 1024 ** 2) return `${(v / 1024 ** 2).toFixed(1)}M`;
  if (a >= 1024) return `${(v / 1024).toFixed(a >= 10240 ? 0 : 1)}K`;
  return v.toFixed(0);
}
