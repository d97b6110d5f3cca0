// A one-line progress bar on a terminal: layers, bytes, rate and ETA. Redrawn at most 10×/s.

import { formatBytes } from './table.js';

export interface ProgressState {
  layersDone: number;
  layersTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

export class ProgressBar {
  private readonly start = performance.now();
  private last = 0;

  constructor(private readonly write: (s: string) => void, private readonly width = 28) {}

  update(p: ProgressState, force = false): void {
    const now = performance.now();
    if (!force && now - this.last < 100 && p.layersDone < p.layersTotal) return;
    this.last = now;
    const frac = p.bytesTotal ? p.bytesDone / p.bytesTotal : p.layersDone / Math.max(1, p.layersTotal);
    const filled = Math.round(frac * this.width);
    const secs = (now - this.start) / 1000;
    const rate = secs > 0 ? p.bytesDone / secs : 0;
    const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / rate : 0;
    this.write(
      `\r[${'#'.repeat(filled)}${'.'.repeat(this.width - filled)}] ${p.layersDone}/${p.layersTotal} layers  ` +
        `${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}  ${formatBytes(rate)}/s  ETA ${eta.toFixed(0)}s\x1b[K`,
    );
  }

  done(): void {
    this.write('\r\x1b[K');
  }
}
