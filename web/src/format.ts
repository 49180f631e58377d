// Every number, unit, date and time the page shows, in the page's language (Intl with the locale's
// conventions; times always on the 24-hour clock). Lists, tiles and chart axes all format through here,
// so one page never mixes two styles.

import { lang, locale, t, tOr } from "./i18n";

export function pct(v: number | null | undefined): string {
  return v === null || v === undefined ? "–" : `${v.toFixed(1)}%`;
}

const numberFormats = new Map<string, Intl.NumberFormat>();
function numberFormat(key: string, options: Intl.NumberFormatOptions): Intl.NumberFormat {
  const k = `${lang()}|${key}`;
  let f = numberFormats.get(k);
  if (!f) numberFormats.set(k, (f = new Intl.NumberFormat(locale(), options)));
  return f;
}

export function num(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  return numberFormat(`n${digits}`, { maximumFractionDigits: digits }).format(v);
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
  return `${numberFormat(`b${i === 0 ? 0 : 1}`, { minimumFractionDigits: i === 0 ? 0 : 1, maximumFractionDigits: i === 0 ? 0 : 1 }).format(x)} ${units[i]}`;
}

/** "1.2 MiB/s" in English, "1.2 MiB/초" in Korean. */
export function perSecond(text: string): string {
  return t("unit.perSecond", { value: text });
}

/** Milliseconds: "12 ms", "1.23 sec" (the locale's unit names). */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v >= 1000) return numberFormat("sec", { style: "unit", unit: "second", unitDisplay: "short", maximumFractionDigits: 2 }).format(v / 1000);
  return numberFormat(`ms${v < 10 ? 1 : 0}`, { style: "unit", unit: "millisecond", unitDisplay: "short",
    maximumFractionDigits: v < 10 ? 1 : 0 }).format(v);
}

type DateKind = "time" | "minute" | "dateTime" | "dayMinute" | "day";
const DATE_OPTIONS: Record<DateKind, Intl.DateTimeFormatOptions> = {
  time: { hour: "2-digit", minute: "2-digit", second: "2-digit" },
  minute: { hour: "2-digit", minute: "2-digit" },
  dateTime: { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" },
  dayMinute: { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" },
  day: { month: "2-digit", day: "2-digit" },
};
const dateFormats = new Map<string, Intl.DateTimeFormat>();

/** The page's one date/time formatter: the locale's order and separators, the 24-hour clock. */
export function formatDate(tsMs: number, kind: DateKind): string {
  const k = `${lang()}|${kind}`;
  let f = dateFormats.get(k);
  if (!f) dateFormats.set(k, (f = new Intl.DateTimeFormat(locale(), { ...DATE_OPTIONS[kind], hourCycle: "h23" })));
  return f.format(tsMs);
}

export function time(tsMs: number | null | undefined): string {
  return tsMs ? formatDate(tsMs, "time") : "–";
}

export function dateTime(tsMs: number | null | undefined): string {
  return tsMs ? formatDate(tsMs, "dateTime") : "–";
}

/** A time axis label for ticks `incrementS` seconds apart: 18:04:05, 18:04, or 12/07 for whole days. */
export function axisTime(tsMs: number, incrementS: number): string {
  return formatDate(tsMs, incrementS >= 86400 ? "day" : incrementS >= 60 ? "minute" : "time");
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return t("duration.dh", { d, h: hh });
  if (hh) return t("duration.hm", { h: hh, m: mm });
  return t("duration.ms", { m: mm, s: s % 60 });
}

/** "12 s ago", "3 min ago", "2 h ago", "4 d ago" (in the page's language). */
export function ago(tsMs: number | null | undefined, now = Date.now()): string {
  if (!tsMs) return "–";
  const s = Math.max(0, Math.round((now - tsMs) / 1000));
  if (s < 60) return t("ago.s", { n: s });
  if (s < 3600) return t("ago.m", { n: Math.floor(s / 60) });
  if (s < 86400) return t("ago.h", { n: Math.floor(s / 3600) });
  return t("ago.d", { n: Math.floor(s / 86400) });
}

/** Compact bytes for chart axes: 950, 13.8K, 2.1M, 1.0G. */
export function compactBytes(v: number): string {
  const a = Math.abs(v);
  if (a >= 1024 ** 3) return `${(v / 1024 ** 3).toFixed(1)}G`;
  if (a >= 1024 ** 2) return `${(v / 1024 ** 2).toFixed(1)}M`;
  if (a >= 1024) return `${(v / 1024).toFixed(a >= 10240 ? 0 : 1)}K`;
  return v.toFixed(0);
}

/** A close reason from the client ("1012 service restart") in the page's language, by its code. */
export function closeReason(reason: string | null | undefined): string {
  if (!reason) return "";
  const m = /^(\d{4})\b/.exec(reason);
  return m ? `${m[1]} ${tOr(`close.${m[1]}`, reason.slice(m[1].length).trim())}` : reason;
}
