// Progressive help for the review page; the page works without it.
// - The occupation search box asks the server's taxonomy search and fills the select next to
//   it. Results become <option>s through textContent only: nothing from the server is parsed
//   as HTML.
// - The reviewer's name is remembered in this browser (localStorage) and filled into every form.
"use strict";

const REVIEWER_KEY = "onet-llm-reviewer";

function debounce(work, milliseconds) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => work(...args), milliseconds);
  };
}

async function searchOccupations(query) {
  const response = await fetch("/api/occupations?q=" + encodeURIComponent(query));
  if (!response.ok) return [];
  return response.json();
}

function fillChoices(select, occupations) {
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
      const occupations = await searchOccupations(query);
      if (ticket !== latest) return; // a newer search is under way
      fillChoices(select, occupations);
      form.dataset.searched = query;
    }, 200),
  );
}

function rememberReviewer() {
  const inputs = document.querySelectorAll("input.reviewer");
  const saved = window.localStorage.getItem(REVIEWER_KEY);
  inputs.forEach((input) => {
    if (saved) input.value = saved;
    input.addEventListener("change", () => {
      window.localStorage.setItem(REVIEWER_KEY, input.value.trim());
      inputs.forEach((other) => {
        if (other !== input) other.value = input.value;
      });
    });
  });
}

function autoSubmitRunPicker() {
  const picker = document.getElementById("run-select");
  if (picker) picker.addEventListener("change", () => picker.form.submit());
}

document.querySelectorAll("form.decide").forEach(wireSearch);
rememberReviewer();
autoSubmitRunPicker();
