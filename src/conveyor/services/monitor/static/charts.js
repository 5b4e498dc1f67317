/* Line charts on <canvas>, no library: time on x, one or more series on y, gaps for nulls,
   a hover read-out. Used by app.js as window.ConveyorCharts.draw(canvas, spec). */
(function () {
  "use strict";

  function niceStep(range, ticks) {
    const raw = range / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const nice = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
    return nice * mag;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    if (v >= 10 || v === 0) return String(Math.round(v));
    return v.toFixed(v >= 1 ? 1 : 2);
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  const state = new WeakMap();

  /* spec: {times: [epoch s], series: [{label, color, values, dashed}], unit: "jobs/s"} */
  function draw(canvas, spec, hoverIndex) {
    state.set(canvas, spec);
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 600;
    const cssH = canvas.clientHeight || 190;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);

    const pad = { l: 44, r: 10, t: 10, b: 22 };
    const w = cssW - pad.l - pad.r;
    const h = cssH - pad.t - pad.b;
    const times = spec.times || [];
    const n = times.length;
    let max = 0;
    for (const s of spec.series) for (const v of s.values) if (v !== null && v > max) max = v;
    if (max <= 0) max = 1;
    const step = niceStep(max, 4);
    const top = Math.ceil(max / step) * step;

    const x = (i) => pad.l + (n <= 1 ? w : (i / (n - 1)) * w);
    const y = (v) => pad.t + h - (v / top) * h;

    // grid and y labels
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.strokeStyle = "#e5e7eb";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= top + step / 2; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(pad.l + w, yy);
      ctx.stroke();
      ctx.fillText(fmt(v), pad.l - 6, yy);
    }
    // x labels
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    if (n > 1) {
      const labels = Math.min(6, n);
      for (let k = 0; k < labels; k++) {
        const i = Math.round((k / (labels - 1)) * (n - 1));
        ctx.textAlign = k === 0 ? "left" : k === labels - 1 ? "right" : "center";
        ctx.fillText(clock(times[i]), x(i), pad.t + h + 6);
      }
    }
    // series
    for (const s of spec.series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.8;
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        if (pen) ctx.lineTo(x(i), y(v));
        else ctx.moveTo(x(i), y(v));
        pen = true;
      });
      ctx.stroke();
      if (s.fill) {
        ctx.setLineDash([]);
        ctx.globalAlpha = 0.08;
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.moveTo(x(0), y(0));
        s.values.forEach((v, i) => ctx.lineTo(x(i), y(v || 0)));
        ctx.lineTo(x(n - 1), y(0));
        ctx.closePath();
        ctx.fill();
        ctx.globalAlpha = 1;
      }
    }
    ctx.setLineDash([]);
    // hover read-out
    if (hoverIndex !== undefined && hoverIndex !== null && n > 0) {
      const i = Math.max(0, Math.min(n - 1, hoverIndex));
      ctx.strokeStyle = "#9ca3af";
      ctx.beginPath();
      ctx.moveTo(Math.round(x(i)) + 0.5, pad.t);
      ctx.lineTo(Math.round(x(i)) + 0.5, pad.t + h);
      ctx.stroke();
      const lines = [clock(times[i]) + ":" + String(new Date(times[i] * 1000).getSeconds()).padStart(2, "0")];
      for (const s of spec.series) lines.push(s.label + ": " + fmt(s.values[i]) + " " + (spec.unit || ""));
      ctx.font = "11px system-ui, sans-serif";
      const boxW = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 12;
      const boxH = lines.length * 15 + 8;
      let bx = x(i) + 8;
      if (bx + boxW > pad.l + w) bx = x(i) - boxW - 8;
      ctx.fillStyle = "rgba(17,24,39,0.88)";
      ctx.fillRect(bx, pad.t + 4, boxW, boxH);
      ctx.fillStyle = "#fff";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      lines.forEach((l, k) => ctx.fillText(l, bx + 6, pad.t + 8 + k * 15));
    }
  }

  function attachHover(canvas) {
    canvas.addEventListener("mousemove", (ev) => {
      const spec = state.get(canvas);
      if (!spec || !spec.times.length) return;
      const rect = canvas.getBoundingClientRect();
      const w = rect.width - 44 - 10;
      const frac = (ev.clientX - rect.left - 44) / Math.max(1, w);
      draw(canvas, spec, Math.round(frac * (spec.times.length - 1)));
    });
    canvas.addEventListener("mouseleave", () => {
      const spec = state.get(canvas);
      if (spec) draw(canvas, spec);
    });
  }

  function legend(el, series) {
    el.textContent = "";
    for (const s of series) {
      const item = document.createElement("span");
      item.className = "legend-item";
      const sw = document.createElement("i");
      sw.style.background = s.color;
      if (s.dashed) sw.className = "dashed";
      item.appendChild(sw);
      item.appendChild(document.createTextNode(s.label));
      el.appendChild(item);
    }
  }

  window.ConveyorCharts = { draw: draw, attachHover: attachHover, legend: legend };
})();
