// PAO portal: the few things a page does after it is served. Every call goes to the REST API
// (/api/v1) with the browser's session cookie and, when it changes something, the session's
// CSRF token; the API decides what is allowed, what the form shows and what is wrong.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  async function call(method, path, body, headers) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrf, ...(headers || {}) },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch("/api/v1" + path, init);
    } catch (err) {
      return { ok: false, status: 0, data: { error: { message: "PAO cannot be reached; check the connection and try again." } } };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function showError(box, answer) {
    const error = (answer.data && answer.data.error) || { message: "PAO answered " + answer.status };
    box.replaceChildren(el("p", { text: error.message }));
    for (const detail of error.details || []) {
      if (detail.field) box.append(el("p", { className: "meta", text: detail.field + ": " + detail.message }));
    }
    if (error.suggestion) box.append(el("p", { className: "hint", text: error.suggestion }));
    if (error.code) box.append(el("p", { className: "meta", text: "Error " + error.code }));
    box.hidden = false;
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "portal-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  // ---- the request form: fields from preview/form, problems from validate/request --------

  function requestForm(form) {
    const itemId = form.dataset.item;
    const resourceId = form.dataset.resource;
    const fieldsBox = form.querySelector("#fields");
    const previewBox = form.querySelector("#preview");
    const errorBox = form.querySelector("#form-error");
    const submit = form.querySelector("#submit");
    const given = JSON.parse(document.getElementById("form-inputs").textContent || "{}");
    const state = { values: { ...given }, fields: [], touched: new Set(), tried: false, busy: false, asked: 0, key: newKey() };

    function controlFor(field) {
      const id = "f-" + field.name;
      const described = "h-" + field.name + " e-" + field.name;
      let control;
      if (field.enum) {
        control = el("select", { id, name: field.name, "aria-describedby": described });
        control.append(el("option", { value: "", text: "Choose…" }));
        for (const option of field.enum) control.append(el("option", { value: JSON.stringify(option), text: String(option) }));
      } else if (field.type === "boolean") {
        control = el("input", { id, name: field.name, type: "checkbox", "aria-describedby": described });
      } else if (field.type === "array" || field.type === "object") {
        control = el("textarea", { id, name: field.name, rows: 3, "aria-describedby": described });
      } else {
        const secret = field.constraints && (field.constraints.writeOnly || field.constraints.format === "password");
        const email = field.constraints && field.constraints.format === "email";
        control = el("input", {
          id,
          name: field.name,
          type: secret ? "password" : email ? "email" : "text",
          inputmode: field.type === "integer" ? "numeric" : field.type === "number" ? "decimal" : undefined,
          autocomplete: "off",
          "aria-describedby": described,
        });
      }
      control.addEventListener("input", () => changed(field.name));
      control.addEventListener("change", () => changed(field.name));
      return control;
    }

    function readControl(field, control) {
      if (field.enum) return control.value === "" ? undefined : JSON.parse(control.value);
      if (field.type === "boolean") return control.checked;
      const raw = control.value.trim();
      if (raw === "") return undefined;
      if (field.type === "integer" && /^-?\d+$/.test(raw)) return parseInt(raw, 10);
      if (field.type === "number" && /^-?\d+(\.\d+)?$/.test(raw)) return parseFloat(raw);
      if (field.type === "array") return raw.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
      if (field.type === "object") {
        try { return JSON.parse(raw); } catch (err) { return raw; }
      }
      return raw; // the server says what is wrong with it
    }

    function writeControl(field, control, value) {
      if (value === undefined || value === null) return;
      if (field.enum) control.value = JSON.stringify(value);
      else if (field.type === "boolean") control.checked = Boolean(value);
      else if (field.type === "array" && Array.isArray(value)) control.value = value.join(", ");
      else if (field.type === "object") control.value = JSON.stringify(value);
      else control.value = String(value);
    }

    function changed(name) {
      const field = state.fields.find((f) => f.name === name);
      const control = form.querySelector("#f-" + CSS.escape(name));
      if (!field || !control) return;
      const value = readControl(field, control);
      if (value === undefined) delete state.values[name];
      else state.values[name] = value;
      state.touched.add(name);
      refreshSoon();
    }

    function render(fields) {
      state.fields = fields;
      const placeholder = fieldsBox.querySelector("p.meta");
      if (placeholder) placeholder.remove();
      for (const field of fields) {
        let box = fieldsBox.querySelector('[data-name="' + CSS.escape(field.name) + '"]');
        if (!field.visible) {
          if (box) box.remove();
          delete state.values[field.name];
          continue;
        }
        if (!box) {
          box = el("div", { className: "field", "data-name": field.name });
          const label = el("label", { for: "f-" + field.name }, el("span", { className: "label-text", text: field.label }));
          label.append(el("span", { className: "required-mark", "aria-hidden": "true", text: " *" }));
          const control = controlFor(field);
          box.append(label, control, el("p", { className: "help", id: "h-" + field.name, text: field.help || "" }),
            el("p", { className: "error", id: "e-" + field.name, "aria-live": "polite" }));
          const start = state.values[field.name] !== undefined ? state.values[field.name] : field.value !== undefined && field.value !== null ? field.value : field.default;
          writeControl(field, control, start);
          if (state.values[field.name] === undefined && field.value !== undefined && field.value !== null) state.values[field.name] = field.value;
        }
        box.classList.toggle("conditional", Boolean(field.conditional));
        box.classList.toggle("required", field.required);
        box.querySelector(".required-mark").hidden = !field.required;
        const control = box.querySelector("#f-" + CSS.escape(field.name));
        if (field.required) control.setAttribute("aria-required", "true");
        else control.removeAttribute("aria-required");
        fieldsBox.append(box); // keeps the form's order
      }
    }

    function showProblems(problems) {
      const byField = new Map();
      for (const problem of problems) {
        const name = (problem.pointer || "").split("/")[2];
        if (name && !byField.has(name)) byField.set(name, problem.message);
      }
      for (const box of fieldsBox.querySelectorAll(".field")) {
        const name = box.dataset.name;
        const message = byField.get(name);
        const shown = message && (state.touched.has(name) || state.tried) ? message : "";
        box.querySelector(".error").textContent = shown;
        box.classList.toggle("invalid", Boolean(shown));
        const control = box.querySelector("#f-" + CSS.escape(name));
        if (shown) control.setAttribute("aria-invalid", "true");
        else control.removeAttribute("aria-invalid");
      }
    }

    function showPreview(answer) {
      if (!answer.valid) {
        previewBox.replaceChildren(el("p", { className: "meta", text: "The preview appears once the form is complete and valid." }));
        return;
      }
      const list = el("ol", { className: "actions" });
      for (const action of answer.actions || []) {
        const spec = el("pre", {}, el("code", { text: JSON.stringify(action.spec, null, 2) }));
        list.append(el("li", { className: "action" },
          el("h3", {}, action.name + " ", el("span", { className: "meta", text: action.type + (action.run === false ? " (skipped)" : "") })),
          el("details", {}, el("summary", { text: "What it sends (secrets masked)" }), spec)));
      }
      previewBox.replaceChildren(list);
    }

    async function refresh() {
      const asked = ++state.asked;
      const inputs = { ...state.values };
      const described = await call("POST", "/preview/form", { item_id: itemId, inputs });
      if (asked !== state.asked) return; // a newer answer is on its way
      if (!described.ok) {
        showError(errorBox, described);
        return;
      }
      render(described.data.fields);
      const check = { item_id: itemId, inputs: { ...state.values } };
      const mode = chosenMode();
      if (mode) check.mode = mode;
      const checked = await call("POST", "/validate/request", check);
      if (asked !== state.asked) return;
      if (!checked.ok) {
        showError(errorBox, checked);
        return;
      }
      showProblems(checked.data.problems || []);
      showPreview(checked.data);
      form.dataset.ready = String(asked);
    }
    const refreshSoon = debounce(refresh, 200);

    function chosenMode() {
      const checked = form.querySelector('input[name="__mode"]:checked');
      return checked ? checked.value : null;
    }
    for (const radio of form.querySelectorAll('input[name="__mode"]')) radio.addEventListener("change", refreshSoon);

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (state.busy) return; // a second click sends nothing: the first one is on its way
      state.busy = true;
      state.tried = true;
      submit.disabled = true;
      const label = submit.textContent;
      submit.textContent = "Submitting…";
      errorBox.hidden = true;
      const mode = chosenMode();
      const body = { inputs: { ...state.values } };
      if (mode) body.mode = mode;
      const answer = resourceId
        ? await call("POST", "/resources/" + encodeURIComponent(resourceId) + "/update", body, { "Idempotency-Key": state.key })
        : await call("POST", "/requests", { item_id: itemId, ...body }, { "Idempotency-Key": state.key });
      if (answer.ok && answer.data && answer.data.request_id) {
        window.location.assign("/portal/requests/" + encodeURIComponent(answer.data.request_id));
        return;
      }
      state.busy = false;
      submit.disabled = false;
      submit.textContent = label;
      showError(errorBox, answer);
      await refresh();
    });

    refresh();
  }

  // ---- a request's page: live log, live status, commands ---------------------------------

  const ENDED = ["completed", "failed", "aborted"];

  function actionsList(actions) {
    const list = el("ol", { className: "actions" });
    for (const action of actions) {
      const item = el("li", { className: "action" },
        el("h3", {}, action.name + " ", el("span", { className: "meta", text: action.type }), " ",
          el("span", { className: "status status-" + action.status, text: action.status })));
      const outputs = action.outputs || {};
      if (Object.keys(outputs).length) {
        const facts = el("dl", { className: "facts" });
        for (const [key, value] of Object.entries(outputs)) {
          const shown = typeof value === "string" && key === "url" && value.startsWith("http")
            ? el("a", { href: value, rel: "noopener noreferrer", text: value })
            : el("code", { text: typeof value === "string" ? value : JSON.stringify(value) });
          facts.append(el("dt", { text: key }), el("dd", {}, shown));
        }
        item.append(facts);
      }
      if (action.error) item.append(el("p", { className: "problem", text: String(action.error) }));
      list.append(item);
    }
    return list;
  }

  function requestPage(section) {
    const id = section.dataset.request;
    const statusEl = document.getElementById("status");
    const log = document.getElementById("log");
    const live = document.getElementById("live");
    const commandError = document.getElementById("command-error");
    let status = section.dataset.status;
    let polling = null;

    function setStatus(found) {
      status = found.status;
      section.dataset.status = status;
      statusEl.textContent = status;
      statusEl.className = "status status-" + status;
      document.getElementById("escalated").hidden = !found.escalated;
      document.getElementById("escalation-level").textContent = String(found.escalation_level || 0);
      const lastError = document.getElementById("last-error");
      lastError.textContent = found.last_error || "";
      lastError.hidden = !found.last_error;
      document.getElementById("actions").replaceChildren(actionsList(found.actions || []));
      document.getElementById("retry").hidden = status !== "failed";
      const ended = ENDED.includes(status);
      document.getElementById("abort-form").hidden = ended;
      document.getElementById("escalate-form").hidden = ended;
      document.getElementById("no-commands").hidden = !ended || status === "failed";
    }

    async function poll() {
      const answer = await call("GET", "/requests/" + encodeURIComponent(id) + "/status");
      if (answer.ok) setStatus(answer.data);
      if (ENDED.includes(status) && polling) {
        clearInterval(polling);
        polling = null;
      }
    }

    function follow() {
      const after = log.dataset.after || "0";
      const source = new EventSource("/api/v1/requests/" + encodeURIComponent(id) + "/logs?follow=true&after=" + after);
      source.addEventListener("open", () => { live.textContent = "(live)"; });
      source.addEventListener("log", (event) => {
        const entry = JSON.parse(event.data);
        if (log.querySelector('[data-seq="' + entry.seq + '"]')) return;
        log.append(el("li", { "data-seq": entry.seq, className: "level-" + entry.level },
          el("time", { text: entry.at.replace("T", " ").slice(0, 19) + " UTC" }), " ", el("span", { text: entry.message })));
        log.dataset.after = String(entry.seq);
        poll();
      });
      source.addEventListener("end", () => {
        source.close();
        live.textContent = "";
        poll();
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) live.textContent = "";
        else live.textContent = "(reconnecting)";
      });
    }

    async function command(name, body) {
      commandError.hidden = true;
      const answer = await call("POST", "/requests/" + encodeURIComponent(id) + "/" + name, body);
      if (!answer.ok) showError(commandError, answer);
      await poll();
      if (!polling && !ENDED.includes(status)) polling = setInterval(poll, 2000);
      return answer.ok;
    }

    document.getElementById("retry").addEventListener("click", () => command("retry"));
    document.getElementById("abort-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (!window.confirm("Abort this request? Its open tickets are told.")) return;
      const reason = event.target.reason.value.trim();
      command("abort", reason ? { reason } : {});
    });
    document.getElementById("escalate-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if (await command("escalate", { reason: event.target.reason.value.trim() })) event.target.reset();
    });

    if (!ENDED.includes(status)) {
      follow();
      polling = setInterval(poll, 2000);
    }
  }

  // ---- approvals and resources -----------------------------------------------------------

  function decisionForm(form) {
    const box = form.querySelector(".problem");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const decision = event.submitter ? event.submitter.value : "approve";
      const body = {};
      const comment = form.comment.value.trim();
      if (comment) body.comment = comment;
      if (form.dataset.plan) body.plan_id = form.dataset.plan;
      for (const button of form.querySelectorAll("button")) button.disabled = true;
      const answer = await call("POST", "/requests/" + encodeURIComponent(form.dataset.request) + "/" + decision, body);
      if (answer.ok) {
        form.replaceWith(el("p", { className: "done", role: "status", text: (decision === "approve" ? "Approved" : "Rejected") + ": the request is now " + answer.data.status + "." }));
        return;
      }
      for (const button of form.querySelectorAll("button")) button.disabled = false;
      showError(box, answer);
    });
  }

  function decommissionForm(form) {
    const box = document.getElementById("resource-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const id = form.dataset.resource;
      if (!window.confirm("Decommission " + id + "? What it made is removed.")) return;
      const answer = await call("POST", "/resources/" + encodeURIComponent(id) + "/decommission", { reason: form.reason.value.trim() }, { "Idempotency-Key": newKey() });
      if (answer.ok && answer.data.request_id) {
        window.location.assign("/portal/requests/" + encodeURIComponent(answer.data.request_id));
        return;
      }
      showError(box, answer);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("request-form");
    if (form) requestForm(form);
    const section = document.getElementById("request");
    if (section) requestPage(section);
    for (const decision of document.querySelectorAll("form.decision")) decisionForm(decision);
    for (const decommission of document.querySelectorAll("form.decommission")) decommissionForm(decommission);
  });
})();
