import { SPARK_POINTS, type ServerState } from "../live";
import { cssVar } from "../theme";

/** Draw a server's CPU ring (0–100 %) into a canvas sized by CSS; no allocation per frame. */
export function drawSparkline(canvas: HTMLCanvasElement, s: ServerState, color: string): void {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const hgt = canvas.clientHeight;
  if (!w || !hgt) return;
  const pw = Math.round(w * dpr);
  const ph = Math.round(hgt * dpr);
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.clearRect(0, 0, pw, ph);
  const n = s.sparkLen;
  if (n < 2) return;
  const start = (s.sparkPos - n + SPARK_POINTS) % SPARK_POINTS;
  const step = pw / (SPARK_POINTS - 1);
  const x0 = pw - (n - 1) * step;
  ctx.beginPath();
  for (let i = 0; i < n; i++) {
    const v = s.spark[(start + i) % SPARK_POINTS];
    const x = x0 + i * step;
    const y = ph - (Math.max(0, Math.min(100, v)) / 100) * (ph - 2 * dpr) - dpr;
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  }
  ctx.lineWidth = 1.5 * dpr;
  ctx.strokeStyle = color;
  ctx.stroke();
  ctx.lineTo(x0 + (n - 1) * step, ph);
  ctx.lineTo(x0, ph);
  ctx.closePath();
  ctx.globalAlpha = 0.15;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
}

export function sparkColor(): string {
  return cssVar("--accent") || "#2f6fde";
}
