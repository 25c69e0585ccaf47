// Render each Vega-Lite spec on the page (a <script type="application/json" class="vega-spec">, written by
// Altair on the server) into the element its data-target names. `ast: true` evaluates expressions with
// vega-interpreter instead of `new Function`, so the charts work under a CSP without 'unsafe-eval';
// `defaultStyle: false` and the tooltip's `disableDefaultStyle` keep vega-embed from adding <style> elements
// (workbench.css styles the tooltip).
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("script.vega-spec").forEach((element) => {
    const target = document.getElementById(element.dataset.target);
    const options = { renderer: "svg", actions: false, ast: true, defaultStyle: false, tooltip: { disableDefaultStyle: true } };
    vegaEmbed(target, JSON.parse(element.textContent), options)
      .then(() => { target.dataset.rendered = "true"; })
      .catch((error) => {
        target.dataset.rendered = "failed";
        target.textContent = `This chart could not be drawn: ${error}`;
      });
  });
});
