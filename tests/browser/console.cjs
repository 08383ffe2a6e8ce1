// Drives the dashboard as an operator would, with playwright-core and the
// machine's chromium (tests/console.rs runs it; tests/run.sh installs it):
// picks a range, a region, opens a title's page by clicking it, clears the
// filters, types a custom range. After each step it reads what every chart
// drew (window.drawn: labels, x values, y series and the API path they came
// from) and the page's address; prints all steps as one JSON line for the test
// to compare with the API. Screenshots go to OUT_DIR.
//
// usage: node console.cjs BASE_URL OUT_DIR REGION FROM_LOCAL TO_LOCAL
"use strict";
const path = require("path");
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const [base, outDir, region, fromLocal, toLocal] = process.argv.slice(2);
const TIMEOUT = 60000;

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1300, height: 1000 }, timezoneId: "UTC" });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("response", (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  const steps = [];
  // Waits until the analytics charts were drawn from a path that `want` accepts.
  const drawnFrom = async (want) => {
    await page.waitForFunction((w) => {
      const d = window.drawn && window.drawn["c-views"];
      return d && new RegExp(w).test(d.query);
    }, want.source, { timeout: TIMEOUT });
  };
  const record = async (name) => {
    steps.push(await page.evaluate((name) => ({
      name,
      search: location.search,
      drawn: window.drawn,
      rangeNote: document.getElementById("range-note").textContent,
      titleHidden: document.getElementById("title-panel").hidden,
      titleName: document.getElementById("title-name").textContent,
      titleNote: document.getElementById("title-note").textContent,
      titleQuery: document.getElementById("title-note").dataset.query || null,
      topQuery: document.getElementById("t-top").dataset.query || null,
      regionQuery: document.getElementById("t-region").dataset.query || null,
      regionRows: [...document.querySelectorAll("#t-region tr")].slice(1).map((tr) => tr.cells[0].textContent),
      alertsFiring: document.getElementById("alerts-panel").dataset.firing || null,
      alertsNote: document.getElementById("alerts-note").textContent,
    }), name));
  };

  // The overview, as it opens: the last hour.
  await page.goto(base + "/");
  await drawnFrom(/last=1h/);
  await page.waitForFunction(() => window.drawn["c-models"] && window.drawn["c-models"].xs.length > 0, null, { timeout: TIMEOUT });
  await record("opened");

  // A day: by the hour.
  await page.selectOption("#range", "24h");
  await drawnFrom(/last=24h$/);
  await page.waitForFunction(() => document.querySelectorAll("#f-region option").length > 1, null, { timeout: TIMEOUT });
  await record("24h");

  // One region: the charts and tables hold it alone.
  await page.selectOption("#f-region", region);
  await drawnFrom(new RegExp(`last=24h&region=${region}$`));
  await page.waitForFunction((r) => (document.getElementById("t-top").dataset.query || "").endsWith(`region=${r}`), region, { timeout: TIMEOUT });
  await page.waitForFunction((r) => (document.getElementById("t-region").dataset.query || "").endsWith(`region=${r}`), region, { timeout: TIMEOUT });
  await record("24h-region");

  // A title's page: click the first of the top titles.
  const link = page.locator("#t-top a.title").first();
  const clicked = await link.getAttribute("data-title");
  await link.click();
  await drawnFrom(new RegExp(`region=${region}&title=${clicked}$`));
  await page.waitForFunction((t) => (document.getElementById("title-note").dataset.query || "").endsWith(`title=${t}`)
    && document.getElementById("title-note").textContent.includes("views"), clicked, { timeout: TIMEOUT });
  await record("title");
  steps[steps.length - 1].clicked = clicked;
  await page.screenshot({ path: path.join(outDir, "title.png"), fullPage: true });

  // Filters cleared, then a week: the overview with the alert firing.
  await page.click("#clear");
  await drawnFrom(/last=24h$/);
  await page.selectOption("#range", "7d");
  await drawnFrom(/last=7d$/);
  await page.waitForFunction(() => document.getElementById("alerts-panel").dataset.firing === "1", null, { timeout: TIMEOUT });
  await record("7d");
  await page.screenshot({ path: path.join(outDir, "overview.png"), fullPage: true });
  await page.locator("#alerts-panel").screenshot({ path: path.join(outDir, "alert.png") });

  // A custom range, typed in.
  await page.selectOption("#range", "custom");
  await page.fill("#from", fromLocal);
  await page.fill("#to", toLocal);
  await drawnFrom(/from=.*&to=/);
  await record("custom");

  await browser.close();
  process.stdout.write(JSON.stringify({ steps, errors }) + "\n");
})().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.exit(1);
});
