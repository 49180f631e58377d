// Light and dark themes: `data-theme` on <html>, chosen by the user or following the system.

export type ThemeChoice = "light" | "dark" | "system";

let choice: ThemeChoice = "system";
const media = window.matchMedia("(prefers-color-scheme: dark)");
const listeners = new Set<() => void>();

export function initTheme(): void {
  const saved = localStorage.getItem("om.theme");
  choice = saved === "light" || saved === "dark" ? saved : "system";
  apply();
  media.addEventListener("change", () => {
    if (choice === "system") apply();
  });
}

export function themeChoice(): ThemeChoice {
  return choice;
}

export function effectiveTheme(): "light" | "dark" {
  return choice === "system" ? (media.matches ? "dark" : "light") : choice;
}

export function setTheme(next: ThemeChoice): void {
  choice = next;
  if (next === "system") localStorage.removeItem("om.theme");
  else localStorage.setItem("om.theme", next);
  apply();
}

export function onThemeChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function apply(): void {
  document.documentElement.dataset.theme = effectiveTheme();
  for (const fn of listeners) fn();
}

/** A CSS custom property's value on <html> (the charts read their colours from the theme). */
export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
