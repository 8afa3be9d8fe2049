// The compare viewer: two images stacked in one transformed stage, the right one
// clipped at a draggable divider.
//
// Both images live in the same stage element and share its one transform, so zoom
// and pan are synced by construction rather than by copying state between panes.

const MIN_ZOOM = 0.05;
const MAX_ZOOM = 32;
const ZOOM_STEP = 1.25;

export class CompareViewer {
  constructor(root) {
    this.viewer = root.querySelector("#viewer");
    this.stage = root.querySelector("#stage");
    this.left = root.querySelector("#left-image");
    this.right = root.querySelector("#right-image");
    this.divider = root.querySelector("#divider");
    this.zoomLabel = root.querySelector("#zoom-level");
    this.leftTag = root.querySelector("#left-tag");
    this.rightTag = root.querySelector("#right-tag");
    this.position = 0.5; // divider, as a fraction of the viewer's width
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.width = 0;
    this.height = 0;
    this.heldPosition = null;
    this.onSwap = () => {};
    this.bind();
  }

  bind() {
    const { viewer, divider } = this;
    let drag = null;
    divider.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      event.stopPropagation();
      divider.setPointerCapture(event.pointerId);
      divider.focus();
      drag = { kind: "divider" };
    });
    viewer.addEventListener("pointerdown", (event) => {
      if (drag) return;
      viewer.setPointerCapture(event.pointerId);
      drag = { kind: "pan", x: event.clientX, y: event.clientY, tx: this.tx, ty: this.ty };
    });
    const move = (event) => {
      if (!drag) return;
      if (drag.kind === "divider") {
        const box = viewer.getBoundingClientRect();
        this.setPosition((event.clientX - box.left) / box.width);
      } else {
        this.tx = drag.tx + event.clientX - drag.x;
        this.ty = drag.ty + event.clientY - drag.y;
        this.render();
      }
    };
    const end = () => {
      drag = null;
    };
    for (const el of [viewer, divider]) {
      el.addEventListener("pointermove", move);
      el.addEventListener("pointerup", end);
      el.addEventListener("pointercancel", end);
    }
    viewer.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const box = viewer.getBoundingClientRect();
        this.zoomAt(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, event.clientX - box.left, event.clientY - box.top);
      },
      { passive: false },
    );
    viewer.addEventListener("keydown", (event) => this.onKey(event));
    viewer.addEventListener("keyup", (event) => {
      if ((event.key === "1" || event.key === "2") && this.heldPosition !== null) {
        this.setPosition(this.heldPosition);
        this.heldPosition = null;
      }
    });
    new ResizeObserver(() => this.render()).observe(viewer);
  }

  onKey(event) {
    const step = event.shiftKey ? 0.1 : 0.02;
    const box = this.viewer.getBoundingClientRect();
    const handled = {
      ArrowLeft: () => this.setPosition(this.position - step),
      ArrowRight: () => this.setPosition(this.position + step),
      Home: () => this.setPosition(0),
      End: () => this.setPosition(1),
      "+": () => this.zoomAt(ZOOM_STEP, box.width / 2, box.height / 2),
      "=": () => this.zoomAt(ZOOM_STEP, box.width / 2, box.height / 2),
      "-": () => this.zoomAt(1 / ZOOM_STEP, box.width / 2, box.height / 2),
      0: () => this.fit(),
      f: () => this.onSwap(),
      F: () => this.onSwap(),
      1: () => this.hold(1),
      2: () => this.hold(0),
    }[event.key];
    if (handled && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      handled();
    }
  }

  hold(position) {
    // Holding 1 or 2 shows one side whole; releasing restores the divider.
    if (this.heldPosition === null) this.heldPosition = this.position;
    this.setPosition(position);
  }

  show(left, right) {
    this.leftTag.textContent = left.label;
    this.rightTag.textContent = right.label;
    this.left.alt = `Left: ${left.label}`;
    this.right.alt = `Right: ${right.label}`;
    this.left.src = left.src;
    this.right.src = right.src;
  }

  setImageSize(width, height) {
    const changed = width !== this.width || height !== this.height;
    this.width = width;
    this.height = height;
    if (changed) this.fit();
  }

  fit() {
    const box = this.viewer.getBoundingClientRect();
    if (!this.width || !box.width) return;
    this.scale = Math.min(box.width / this.width, box.height / this.height);
    this.tx = (box.width - this.width * this.scale) / 2;
    this.ty = (box.height - this.height * this.scale) / 2;
    this.render();
  }

  zoomAt(factor, x, y) {
    const scale = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.scale * factor));
    const applied = scale / this.scale;
    // Keep the point under the cursor where it is.
    this.tx = x - (x - this.tx) * applied;
    this.ty = y - (y - this.ty) * applied;
    this.scale = scale;
    this.render();
  }

  setPosition(fraction) {
    this.position = Math.min(1, Math.max(0, fraction));
    const percent = Math.round(this.position * 100);
    this.divider.setAttribute("aria-valuenow", String(percent));
    this.divider.setAttribute("aria-valuetext", `${percent}% left image, ${100 - percent}% right image`);
    this.render();
  }

  render() {
    const box = this.viewer.getBoundingClientRect();
    const transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`;
    this.stage.style.transform = transform;
    this.stage.style.width = `${this.width}px`;
    this.stage.style.height = `${this.height}px`;
    this.stage.classList.toggle("pixelated", this.scale >= 2);
    // The divider is in viewer pixels; the clip is in image pixels under the stage transform.
    const cut = (this.position * box.width - this.tx) / this.scale;
    this.right.style.clipPath = `inset(0 0 0 ${Math.max(0, cut)}px)`;
    this.divider.style.left = `${this.position * 100}%`;
    this.zoomLabel.value = `${Math.round(this.scale * 100)}%`;
    this.zoomLabel.textContent = this.zoomLabel.value;
  }
}
