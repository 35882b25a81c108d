// The page's "Estimated portions" section: asks /v1/segment for ?nutrition=true, shows grams and
// kcal per class with their ranges and the assumptions, and asks again when the plate changes.
"use strict";

const cmiNutrition = (() => {
  const el = (id) => document.getElementById(id);
  let requestAgain = null;
  let sequence = 0;

  function diameter() {
    const value = Number(el("plate-diameter").value);
    return Number.isFinite(value) && value >= 5 && value <= 100 ? value : null;
  }

  // The query string the upload adds: nutrition on, with the plate size shown in the field.
  function query() {
    const d = diameter();
    return `&nutrition=true${d === null ? "" : `&plate_diameter_cm=${d}`}`;
  }

  function cell(value, range) {
    const td = document.createElement("td");
    td.className = "num";
    td.append(String(value));
    if (range) {
      const span = document.createElement("span");
      span.className = "range";
      span.textContent = range;
      td.append(span);
    }
    return td;
  }

  function row(name, grams, kcal, broad) {
    const tr = document.createElement("tr");
    const label = document.createElement("td");
    label.textContent = broad ? `${name} *` : name;
    if (broad) label.title = "A broad class: one table row cannot stand for all of it.";
    tr.append(
      label,
      cell(`${grams.value} g`, `${grams.low}–${grams.high}`),
      cell(`${kcal.value}`, `${kcal.low}–${kcal.high}`),
    );
    return tr;
  }

  function show(body) {
    const n = body && body.nutrition;
    const section = el("nutrition");
    if (!n) {
      section.hidden = true;
      return;
    }
    const rows = n.classes.map((c) => row(c.name, c.grams, c.kcal, c.broad));
    const table = el("nutrition-table");
    table.querySelector("tbody").replaceChildren(...rows);
    table.querySelector("tfoot").replaceChildren(row("Total", n.total.grams, n.total.kcal, false));
    const a = n.assumptions;
    const broad = n.classes.some((c) => c.broad) ? " * broad class: wider range." : "";
    el("nutrition-assumptions").textContent =
      `Assumes a plate ${a.plate_diameter_cm} cm across (${a.plate_diameter_source}) spanning ` +
      `${a.plate_fill.low * 100}–${a.plate_fill.high * 100} % of the photo's shorter side, ` +
      `and a typical thickness and density per food (table: ${a.table.path}). ` +
      `Ranges combine the ends of every assumption; rough estimates, not measurements.${broad}`;
    if (el("plate-diameter").value === "") el("plate-diameter").value = a.plate_diameter_cm;
    section.hidden = false;
  }

  async function plateChanged(report) {
    const d = diameter();
    if (d === null) {
      report("The plate diameter must be between 5 and 100 cm.", true);
      return;
    }
    if (!requestAgain) return;
    const mine = ++sequence;
    report(`Estimating for a ${d} cm plate…`, false);
    const body = await requestAgain(`/v1/segment?nutrition=true&plate_diameter_cm=${d}`);
    if (body && mine === sequence) {
      show(body);
      report(`Estimated for a ${d} cm plate.`, false);
    }
  }

  // requestFn(url) posts the current photo to url and resolves to the JSON body (or null after
  // reporting the error); report(text, isError) writes the page's status line.
  function setup(requestFn, report) {
    requestAgain = requestFn;
    el("plate-diameter").addEventListener("change", () => plateChanged(report));
  }

  return { query, show, setup };
})();
