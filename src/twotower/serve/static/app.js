// The twotower page: plain JS over the service's own JSON routes (no build step, no CDN).
"use strict";

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
let lastList = [];
let actions = ["click"];            // the positive actions of the model's config, read from /model

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function say(message, isError = false) {
  statusLine.textContent = message;
  statusLine.className = isError ? "error" : "";
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

async function names(ids) {
  if (!ids.length) return {};
  return (await api("/items/names", {item_ids: ids})).names;
}

function itemLink(id, name) {
  return el("a", {href: `#/item/${encodeURIComponent(id)}`, class: "item-link"}, name || id);
}

function when(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16);
}

// --- users: history, the list explained, events ------------------------------------------------------------
async function showUser(userId) {
  const input = el("input", {type: "text", id: "user-input", list: "user-list", placeholder: "user id",
                             value: userId || ""});
  const list = el("datalist", {id: "user-list"});
  const form = el("form", {class: "bar", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/user/${encodeURIComponent(input.value.trim())}`;
  }}, input, list, el("button", {id: "user-go", type: "submit"}, "Show"));
  view.replaceChildren(form);
  api("/users?limit=50").then((r) => list.replaceChildren(...r.users.map((u) => el("option", {value: u}))));
  if (!userId) {
    say("Pick or type a user id.");
    return;
  }
  const history = el("section", {id: "history"}, el("h2", {}, "History, newest first"));
  const recs = el("section", {id: "recs"}, el("h2", {}, "Recommendations"));
  view.append(el("div", {class: "columns"}, history, recs));
  try {
    await Promise.all([fillHistory(history, userId), fillRecs(recs, userId, false)]);
  } catch (err) {
    say(String(err.message || err), true);
  }
}

async function fillHistory(section, userId) {
  const h = await api(`/users/${encodeURIComponent(userId)}/history?limit=30`);
  const labels = await names(h.events.map((e) => e.item_id));
  const items = h.events.map((e) => el("li", {class: "history-item"}, itemLink(e.item_id, labels[e.item_id]),
    el("div", {class: "muted"}, `${e.action || "weight " + e.weight} · ${when(e.timestamp)}`)));
  section.replaceChildren(el("h2", {}, `History, newest first (${h.events.length} shown)`),
                          items.length ? el("ol", {}, items) : el("p", {class: "muted"}, "No events yet."));
}

async function fillRecs(section, userId, afterEvent) {
  const r = await api("/explain", {user_id: userId, k: 10});
  document.getElementById("version").textContent = `model ${r.model_version}`;
  const before = new Set(lastList);
  lastList = r.items.map((i) => i.item_id);
  const changed = afterEvent ? lastList.filter((id) => !before.has(id)).length : 0;
  const cards = r.items.map((item) => recCard(userId, item, afterEvent && !before.has(item.item_id)));
  const how = !r.personalized ? "no history yet: the most popular items" :
    r.ranked ? "retrieved by the towers, ordered by the ranker" : "retrieval order (no ranker)";
  section.replaceChildren(el("h2", {}, `Recommendations for ${userId}`), el("p", {class: "muted"}, how),
                          el("ol", {}, cards));
  if (afterEvent) say(`Event stored; the list now has ${changed} new item(s).`);
  else say(`Showing ${r.items.length} recommendations for ${userId}.`);
}

function recCard(userId, item, isNew) {
  const widest = Math.max(...item.reasons.map((x) => x.contribution), 1e-9);
  const reasons = item.reasons.map((x) => el("li", {class: "reason", "data-kind": x.kind,
                                                    title: `${x.features.join(", ")}: ${x.contribution.toFixed(3)}`},
    el("span", {class: "bar", style: `width:${Math.max(4, 60 * x.contribution / widest)}px`}),
    `${x.text} (+${x.contribution.toFixed(2)})`));
  const near = item.nearest_history.length ? el("div", {class: "near"}, "near your: ",
    ...item.nearest_history.map((n, i) => [i ? ", " : "", itemLink(n.item_id, n.name),
                                           ` (${n.similarity.toFixed(2)})`])) : "";
  const send = (action) => el("button", {type: "button", class: `send-${action}`, onclick: async () => {
    try {
      await api("/events", {user_id: userId, item_id: item.item_id, action});
      await Promise.all([fillHistory(document.getElementById("history"), userId),
                         fillRecs(document.getElementById("recs"), userId, true)]);
    } catch (err) {
      say(String(err.message || err), true);
    }
  }}, action);
  const tower = item.tower_score === null ? "" : `tower ${item.tower_score.toFixed(3)} · `;
  return el("li", {class: `rec${isNew ? " new" : ""}`, "data-item": item.item_id},
    el("div", {class: "head"}, itemLink(item.item_id, item.name),
       el("span", {class: "scores"}, `${tower}score ${item.score.toFixed(3)}`)),
    el("ul", {class: "reasons"}, reasons), near,
    el("div", {class: "actions"}, ...actions.flatMap((a) => [send(a), " "])));
}

// --- search ------------------------------------------------------------------------------------------------
async function showSearch(params) {
  const query = el("input", {type: "text", id: "search-input", placeholder: "what are you looking for?",
                             value: params.get("q") || ""});
  const user = el("input", {type: "text", id: "search-user", placeholder: "user id (optional)",
                            value: params.get("user") || ""});
  const form = el("form", {class: "bar", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams({q: query.value});
    if (user.value.trim()) p.set("user", user.value.trim());
    location.hash = `#/search?${p}`;
  }}, query, user, el("button", {id: "search-go", type: "submit"}, "Search"));
  const results = el("section", {id: "search-results"}, el("h2", {}, "Results"));
  view.replaceChildren(form, results);
  if (!params.get("q")) {
    say("Type a query; with a user id the results follow their history.");
    return;
  }
  try {
    const body = {query: params.get("q"), k: 20};
    if (params.get("user")) body.user_id = params.get("user");
    const r = await api("/search", body);
    const labels = await names(r.items.map((i) => i.item_id));
    results.replaceChildren(el("h2", {}, `Results for “${r.query}”` + (r.personalized ? ", in your order" : "")),
      el("ol", {}, r.items.map((i) => el("li", {class: "search-hit"}, itemLink(i.item_id, labels[i.item_id]),
                                          el("span", {class: "scores"}, ` score ${i.score.toFixed(3)}`)))));
    say(`${r.items.length} results.`);
  } catch (err) {
    say(String(err.message || err), true);
  }
}

// --- one item ----------------------------------------------------------------------------------------------
async function showItem(itemId) {
  view.replaceChildren();
  try {
    const item = await api(`/items/${encodeURIComponent(itemId)}`);
    const similar = await api(`/items/${encodeURIComponent(itemId)}/similar?k=10`);
    const labels = await names(similar.items.map((i) => i.item_id));
    const rows = Object.entries(item.attributes).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)));
    view.append(el("section", {}, el("h2", {id: "item-name"}, item.name),
                   el("p", {class: "muted"}, `id ${item.item_id}`), el("table", {}, rows)),
                el("section", {id: "similar"}, el("h2", {}, "Similar items (towers' space)"),
                   el("ol", {}, similar.items.map((i) => el("li", {}, itemLink(i.item_id, labels[i.item_id]),
                                                  el("span", {class: "scores"}, ` ${i.score.toFixed(3)}`))))));
    say(`Item ${item.item_id}.`);
  } catch (err) {
    say(String(err.message || err), true);
  }
}

// --- the model ---------------------------------------------------------------------------------------------
function table(rows, columns) {
  return el("table", {}, el("tr", {}, columns.map((c) => el("th", {}, c))),
    rows.map((r) => el("tr", {}, columns.map((c) => el("td", {},
      typeof r[c] === "number" ? (Number.isInteger(r[c]) ? r[c] : r[c].toFixed(4)) : (r[c] ?? ""))))));
}

async function showModel() {
  view.replaceChildren();
  try {
    const m = await api("/model");
    const facts = [["version", m.model_version], ["folder or registry entry", m.ref], ["weights", m.model_id],
                   ["users", m.n_users], ["items", m.n_items], ["index", m.index.index],
                   ["ranked", m.ranked ? "yes" : `no: ${m.note}`], ["search", m.search ? "yes" : "no"]];
    const evaluation = m.evaluation ? [el("p", {class: "muted"},
        `held-out events: ${m.evaluation.test} (${m.evaluation.targets} targets), from \`twotower report --test\``),
        table(m.evaluation.rows, Object.keys(m.evaluation.rows[0]))] :
      [el("p", {class: "muted"}, "No held-out evaluation recorded yet: run `twotower report --model DIR --test " +
                                  "EVENTS --out report.html` with events after the training log.")];
    const validation = Object.entries(m.validation).map(([k, v]) => ({metric: k, value: v}));
    if (m.ranker) validation.push({metric: "ranker valid NDCG@10", value: m.ranker["valid_ndcg@10"]},
                                  {metric: "retrieval order on the same requests", value: m.ranker["base_ndcg@10"]});
    view.append(el("section", {id: "model-facts"}, el("h2", {}, "Version"),
                   table(facts.map(([k, v]) => ({fact: k, value: v})), ["fact", "value"])),
                el("section", {id: "model-evaluation"}, el("h2", {}, "Evaluation against the baselines"),
                   ...evaluation, el("h2", {}, "Validation during training"), table(validation, ["metric", "value"])),
                el("section", {}, el("h2", {}, "Plots"),
                   el("div", {class: "plots", id: "model-plots"}, m.plots.map((p) => el("img", {src: p, alt: p})))));
    say(`Model ${m.model_version}.`);
  } catch (err) {
    say(String(err.message || err), true);
  }
}

// --- routing -----------------------------------------------------------------------------------------------
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch (err) {
    say(`The address is not valid (${err.message}); showing it as written.`, true);
    return text;
  }
}

function route() {
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  if (path.startsWith("/user/")) return showUser(decoded(path.slice(6)));
  if (path.startsWith("/item/")) return showItem(decoded(path.slice(6)));
  if (path === "/search") return showSearch(params);
  if (path === "/model") return showModel();
  return showUser("");
}

window.addEventListener("hashchange", route);
api("/model").then((m) => {
  document.getElementById("version").textContent = `model ${m.model_version}`;
  if (m.actions && m.actions.length) actions = m.actions;
}).catch(() => {}).finally(route);
