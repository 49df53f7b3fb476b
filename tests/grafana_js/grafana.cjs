// Grafana's own frontend code, run under Node for the board tests (tests/boards/test_boards_grafana.py).
//
// Versions are those Grafana 11.6 ships (package.json): @grafana/scenes 6.5.3 interpolates the
// variables (Scenes-powered dashboards are Grafana 11's default), @grafana/data 11.6.0 runs the
// panels' transformations, field overrides and display processors.
//
// Reads one JSON request on stdin, writes one JSON answer on stdout:
//   {"interpolate": [{id, sql, variables: [<templating entry with current state>], interval_ms}]}
//     -> {"interpolate": [{id, sql}]}
//   {"options": [{id, variable: <templating entry>}]} -> {"options": [{id, options: [{text, value}]}]}
//     (what a custom variable offers: CustomVariable parses its query)
//   {"display": [{id, panel: <panel JSON>, frame: {fields: [{name, type, values}]}}]}
//     -> {"display": [{id, fields: [{name, displayName, type, unit, decimals, colorMode, cellType,
//                                    values: [{text, suffix, color}]}], titles: [...]}]}
'use strict';

const Module = require('module');
const { JSDOM } = require('jsdom');

// -- what a browser gives Grafana's bundles and Node does not -------------------------------------------------------
// The packages are built for webpack: it resolves extension-less deep imports and swallows CSS.
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
  try {
    return resolve.call(this, request, parent, ...rest);
  } catch (error) {
    if (request.includes('/dist/')) return resolve.call(this, `${request}.js`, parent, ...rest);
    throw error;
  }
};
for (const ext of ['.css', '.scss', '.svg']) Module._extensions[ext] = (m) => { m.exports = {}; };
const { window } = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://localhost/' });
for (const key of Object.getOwnPropertyNames(window)) {
  if (!(key in globalThis)) {
    try { globalThis[key] = window[key]; } catch { /* read-only in Node */ }
  }
}
for (const key of ['window', 'document', 'navigator', 'location', 'Event', 'CustomEvent', 'EventTarget',
                   'HTMLElement', 'Element', 'Node', 'getComputedStyle', 'localStorage', 'sessionStorage']) {
  Object.defineProperty(globalThis, key, { value: key === 'window' ? window : window[key], configurable: true, writable: true });
}
const inert = () => ({ matches: false, addListener() {}, removeListener() {}, addEventListener() {}, removeEventListener() {} });
globalThis.matchMedia = window.matchMedia = inert;
class NoObserver { observe() {} unobserve() {} disconnect() {} }
globalThis.IntersectionObserver = globalThis.ResizeObserver = NoObserver;

const scenes = require('@grafana/scenes');
const data = require('@grafana/data');
const { firstValueFrom } = require('rxjs');

// -- interpolation -------------------------------------------------------------------------------------------------

// The ClickHouse plugin's default format, applied to a variable written without one ($x, ${x}).
// Its frontend is not on npm: grafana/clickhouse-datasource v4.11.2, src/data/CHDatasource.ts, `format`.
function clickhouseFormat(value) {
  if (Array.isArray(value)) return `'${value.join("','")}'`;
  return value;
}

function options(entry) {
  return (entry.options || []).map((o) => ({ label: String(o.text), value: String(o.value) }));
}

// A dashboard JSON templating entry, at the state the request gives it, as a Scenes variable: the same
// fields Grafana's transformSaveModelToScene reads (public/app/features/dashboard-scene/serialization, 11.6).
function sceneVariable(entry) {
  const current = entry.current || {};
  const common = { name: entry.name, label: entry.label, value: current.value, text: current.text };
  const multi = {
    ...common,
    options: options(entry),
    isMulti: Boolean(entry.multi),
    includeAll: Boolean(entry.includeAll),
    allValue: entry.allValue || undefined,
  };
  switch (entry.type) {
    case 'query':
      return new scenes.QueryVariable({ ...multi, query: entry.query, datasource: entry.datasource });
    case 'custom':
      return new scenes.CustomVariable({ ...multi, query: entry.query });
    case 'textbox':
      return new scenes.TextBoxVariable({ name: entry.name, value: String(current.value ?? entry.query ?? '') });
    case 'constant':
      return new scenes.ConstantVariable({ name: entry.name, value: String(entry.query ?? '') });
    default:
      throw new Error(`variable ${entry.name}: type ${entry.type} is not handled by this check`);
  }
}

function interpolate(item) {
  const scene = new scenes.EmbeddedScene({
    $timeRange: new scenes.SceneTimeRange({ from: 'now-30d', to: 'now' }),
    $variables: new scenes.SceneVariableSet({ variables: item.variables.map(sceneVariable) }),
    body: new scenes.SceneFlexLayout({ children: [] }),
  });
  const ms = item.interval_ms || 60000;
  const scopedVars = {
    __interval: { text: data.rangeUtil.secondsToHms(ms / 1000), value: data.rangeUtil.secondsToHms(ms / 1000) },
    __interval_ms: { text: String(ms), value: ms },
  };
  // Grafana 11.6 TemplateSrv.replace hands a scene's query to sceneGraph.interpolate with the plugin's format
  // (grafana public/app/features/templating/template_srv.ts); the plugin calls it from applyTemplateVariables.
  return { id: item.id, sql: scenes.sceneGraph.interpolate(scene, item.sql, scopedVars, clickhouseFormat) };
}

async function variableOptions(item) {
  const variable = sceneVariable(item.variable);
  const found = await firstValueFrom(variable.getValueOptions({}));
  return { id: item.id, options: found.map((o) => ({ text: o.label, value: o.value })) };
}

// -- how a panel shows a result ------------------------------------------------------------------------------------

// The standard field options the boards set. Grafana's own list (getAllOptionEditors, app code, not on npm)
// registers each with `process` that returns the stored value unchanged for these ids; applyFieldOverrides and the
// display processor below are @grafana/data's.
const STANDARD = ['displayName', 'unit', 'decimals', 'min', 'max', 'thresholds', 'color', 'noValue', 'mappings'];
const CUSTOM = ['cellOptions', 'width', 'align', 'filterable', 'lineWidth', 'fillOpacity', 'showPoints', 'drawStyle'];
const fieldConfigRegistry = new data.FieldConfigOptionsRegistry(() => [
  ...STANDARD.map((id) => ({ id, path: id, name: id, process: (v) => v, shouldApply: () => true, override: () => null, editor: () => null })),
  ...CUSTOM.map((path) => ({
    id: `custom.${path}`, path, name: path, isCustom: true, process: (v) => v, shouldApply: () => true,
    override: () => null, editor: () => null,
  })),
]);

// The transformations Grafana registers at start (public/app/features/transformers/standardTransformers.ts),
// each of them @grafana/data's own.
// @grafana/data exports some under two names (seriesToColumns is joinByField): one entry an id.
data.standardTransformersRegistry.setInit(() =>
  [...new Map(Object.values(data.standardTransformers).map((t) => [t.id, t])).values()].map((transformation) => ({
    id: transformation.id,
    aliasIds: transformation.aliasIds,
    name: transformation.name,
    transformation,
    editor: () => null,
  }))
);

const theme = data.createTheme();

function frameOf(result) {
  const types = { number: data.FieldType.number, string: data.FieldType.string, time: data.FieldType.time,
                  date: data.FieldType.time, boolean: data.FieldType.boolean };
  return data.createDataFrame({
    refId: 'A',
    fields: result.fields.map((f) => ({ name: f.name, type: types[f.type] || data.FieldType.other, values: f.values, config: {} })),
  });
}

async function display(item) {
  const panel = item.panel;
  let frames = [frameOf(item.frame)];
  if (panel.transformations && panel.transformations.length) {
    frames = await firstValueFrom(data.transformDataFrame(panel.transformations, frames));
  }
  const replaceVariables = (text, scopedVars) => {
    // row and field macros (${__data.fields.x}, ${__field.name}) are interpolated by Scenes as in a panel
    const scene = new scenes.EmbeddedScene({ body: new scenes.SceneFlexLayout({ children: [] }) });
    return scenes.sceneGraph.interpolate(scene, text, scopedVars);
  };
  const fieldConfig = panel.fieldConfig || { defaults: {}, overrides: [] };
  const shown = data.applyFieldOverrides({
    data: frames, fieldConfig, replaceVariables, theme, timeZone: 'Asia/Ho_Chi_Minh', fieldConfigRegistry,
  });
  const fields = [];
  for (const frame of shown) {
    for (const field of frame.fields) {
      fields.push({
        name: field.name,
        displayName: data.getFieldDisplayName(field, frame, shown),
        type: field.type,
        unit: field.config.unit ?? null,
        decimals: field.config.decimals ?? null,
        colorMode: field.config.color?.mode ?? null,
        cellType: field.config.custom?.cellOptions?.type ?? null,
        values: field.values.map((v) => {
          const d = field.display(v);
          return { text: d.text, suffix: d.suffix ?? '', color: d.color ?? null };
        }),
      });
    }
  }
  let titles = null;
  if (panel.options && panel.options.reduceOptions) {
    // what a stat or bar gauge panel draws: one value per row (values: true) or per field, with its title
    titles = data.getFieldDisplayValues({
      data: shown, reduceOptions: panel.options.reduceOptions, fieldConfig, replaceVariables, theme,
      timeZone: 'Asia/Ho_Chi_Minh',
    }).map((v) => ({ title: v.display.title, text: v.display.text, suffix: v.display.suffix ?? '', color: v.display.color }));
  }
  return { id: item.id, fields, titles };
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const answer = {};
  if (request.options) answer.options = await Promise.all(request.options.map(variableOptions));
  if (request.interpolate) answer.interpolate = request.interpolate.map(interpolate);
  if (request.display) answer.display = await Promise.all(request.display.map(display));
  process.stdout.write(JSON.stringify(answer));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
