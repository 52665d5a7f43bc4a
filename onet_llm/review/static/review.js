// Keyboard review for the review page; the page works without it (every button is a form).
// - j/k (or arrows) move the focus between rows, Enter expands the focused row in place,
//   a accept, o override (opens the row and focuses the occupation search), u unsure, f flag,
//   c comment (focuses the comment box; Enter in it saves the comment), z undo, n/p next or
//   previous page. Shortcuts are off while typing in a box.
// - Decisions are saved with fetch and the same form fields and token; the server answers with
//   the row re-rendered by the page's own template (escaped there, parsed here with
//   DOMParser: no inline script can run, the Content-Security-Policy allows none) and the new
//   counts. Bulk accept asks for confirmation naming the count.
// - The occupation search asks the server's taxonomy search; results become <option>s
//   through textContent only.
"use strict";

// Decisions are sent one after another in the order pressed (a fast reviewer is never
// dropped); each finds its row by number when its turn comes, as an earlier answer may have
// replaced the element.
const state = { focused: -1, chain: Promise.resolve(), pending: 0 };

function debounce(work, milliseconds) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => work(...args), milliseconds);
  };
}

function rows() {
  return Array.from(document.querySelectorAll("article.posting"));
}

function say(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}

function focusRow(index) {
  const all = rows();
  if (all.length === 0) return;
  index = Math.max(0, Math.min(all.length - 1, index));
  all.forEach((row) => row.classList.remove("focused"));
  state.focused = index;
  const row = all[index];
  row.classList.add("focused");
  row.scrollIntoView({ block: "nearest" });
  document.body.dataset.focusedRow = row.dataset.row;
}

function focusedRow() {
  const all = rows();
  return state.focused >= 0 && state.focused < all.length ? all[state.focused] : null;
}

function updateCounts(counts) {
  for (const [view, value] of Object.entries(counts || {})) {
    const element = document.querySelector(`[data-count="${view}"]`);
    if (element) element.textContent = String(value);
  }
}

function replaceRow(row, html) {
  const parsed = new DOMParser().parseFromString(html, "text/html");
  const fresh = parsed.querySelector("article.posting");
  if (!fresh) return row;
  const wasOpen = row.querySelector("details.row-details").open;
  fresh.querySelector("details.row-details").open = wasOpen;
  row.replaceWith(fresh);
  wireRow(fresh);
  if (row.classList.contains("focused")) fresh.classList.add("focused");
  return fresh;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { Accept: "application/json" },
    body: new URLSearchParams(body),
    credentials: "same-origin",
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function decide(row, action) {
  if (!row) return;
  const number = row.dataset.row;
  state.pending += 1;
  document.body.dataset.pending = String(state.pending);
  state.chain = state.chain.then(() => send(number, action));
}

async function send(number, action) {
  const row = document.getElementById("row-" + number);
  try {
    const data = new FormData(row.querySelector("form.decide"));
    data.set("action", action);
    const answer = await post("/decide", data);
    replaceRow(row, answer.html);
    updateCounts(answer.counts);
    say(`row ${number}: ${answer.action}`);
    document.body.dataset.decisions = String(Number(document.body.dataset.decisions || 0) + 1);
  } catch (error) {
    say(`row ${number}: ${error.message}`);
  } finally {
    state.pending -= 1;
    document.body.dataset.pending = String(state.pending);
  }
}

function wireSearch(form) {
  const box = form.querySelector(".occupation-search");
  const select = form.querySelector(".occupation-choice");
  if (!box || !select) return;
  const original = Array.from(select.options).map((option) => option.cloneNode(true));
  let latest = 0;
  box.addEventListener(
    "input",
    debounce(async () => {
      const query = box.value.trim();
      const ticket = ++latest;
      if (query.length < 2) {
        select.replaceChildren(...original.map((option) => option.cloneNode(true)));
        return;
      }
      const response = await fetch("/api/occupations?q=" + encodeURIComponent(query));
      const occupations = response.ok ? await response.json() : [];
      if (ticket !== latest) return; // a newer search is under way
      const options = occupations.map((occupation) => {
        const option = document.createElement("option");
        option.value = occupation.onet_code;
        option.textContent = occupation.onet_code + " " + occupation.onet_title;
        return option;
      });
      if (options.length === 0) {
        const none = document.createElement("option");
        none.value = "";
        none.textContent = "no occupation matches";
        none.disabled = true;
        options.push(none);
      }
      select.replaceChildren(...options);
      select.selectedIndex = options[0].disabled ? -1 : 0;
      form.dataset.searched = query;
    }, 200),
  );
}

function wireRow(row) {
  const form = row.querySelector("form.decide");
  if (!form) return;
  wireSearch(form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const action = event.submitter ? event.submitter.value : "comment";
    decide(row, action);
  });
  row.addEventListener("click", () => {
    const index = rows().indexOf(row);
    if (index !== state.focused) focusRow(index);
  });
}

async function bulkAccept(form) {
  // Ask the server how many rows it would accept now (decisions made since the page loaded
  // count), confirm that number, and send it along: if it changed meanwhile, nothing is written.
  const data = new FormData(form);
  try {
    const { count } = await post("/bulk", data);
    if (count === 0) return say("nothing left to accept here");
    const where = form.id === "bulk-page" ? "on this page" : "in this filter";
    if (!window.confirm(`Accept the top label of ${count} open rows ${where}?`)) return;
    data.set("confirmed", "1");
    data.set("expected", String(count));
    const answer = await post("/bulk", data);
    say(`accepted ${answer.accepted} rows`);
    window.location.reload();
  } catch (error) {
    say(error.message);
  }
}

function typing(target) {
  return target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (typing(target)) {
    if (event.key === "Escape") target.blur();
    if (event.key === "Enter" && target.classList.contains("note-input")) {
      event.preventDefault();
      decide(target.closest("article.posting"), "comment");
    }
    return;
  }
  const row = focusedRow();
  const actions = { a: "accept", u: "unsure", f: "flag", z: "undo" };
  if (event.key === "j" || event.key === "ArrowDown") focusRow(state.focused + 1);
  else if (event.key === "k" || event.key === "ArrowUp") focusRow(state.focused - 1);
  else if (event.key === "Enter" && row) {
    const details = row.querySelector("details.row-details");
    details.open = !details.open;
  } else if (actions[event.key] && row) {
    if (event.key === "a" && row.dataset.hasLabel !== "1") return say("no label to accept");
    decide(row, actions[event.key]);
    if (event.key !== "z") focusRow(state.focused + 1);
  } else if ((event.key === "o" || event.key === "c") && row) {
    row.querySelector("details.row-details").open = true;
    row.querySelector(event.key === "o" ? ".occupation-search" : ".note-input").focus();
  } else if (event.key === "n" || event.key === "p") {
    const link = document.getElementById(event.key === "n" ? "next-page" : "previous-page");
    if (link) window.location.href = link.href;
  } else return;
  event.preventDefault();
}

rows().forEach(wireRow);
document.querySelectorAll("form.bulk").forEach((form) =>
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    bulkAccept(form);
  }),
);
const picker = document.getElementById("run-select");
if (picker) picker.addEventListener("change", () => picker.form.submit());
document.addEventListener("keydown", onKey);
document.body.dataset.ready = "1";
if (rows().length) focusRow(0);
