/**
 * hubforge in JupyterLab: code a kernel-side widget offers goes into a new cell at once.
 *
 * The kernel (hubforge.widgets.notebook_insert) opens a comm to the target
 * `hubforge.insert` with `{"code": str, "widget": model id?}`. This plugin inserts a code
 * cell holding that code below the cell showing the widget (else below the active cell),
 * does not run it, makes it the active cell, answers `{"inserted": true}` and closes the
 * comm. Anything else is closed unanswered, and the kernel falls back to IPython's
 * `set_next_input` as it does where this extension is absent.
 */

import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import type { ICodeCellModel } from '@jupyterlab/cells';
import {
  INotebookTracker,
  Notebook,
  NotebookPanel
} from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';

/** The comm target the kernel opens (hubforge.widgets.notebook_insert.TARGET). */
const TARGET = 'hubforge.insert';

/** The largest code accepted, in bytes of UTF-8: a snippet, never a data dump. */
const MAX_CODE_BYTES = 100_000;

/** How a notebook output names the ipywidget it shows. */
const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';

/** The code of a valid request, or null. */
function requestedCode(data: unknown): string | null {
  if (typeof data !== 'object' || data === null) {
    return null;
  }
  const code = (data as { code?: unknown }).code;
  if (typeof code !== 'string') {
    return null;
  }
  return new TextEncoder().encode(code).length <= MAX_CODE_BYTES ? code : null;
}

/** Whether the cell at `index` shows the widget of model `modelId` among its outputs. */
function showsWidget(notebook: Notebook, index: number, modelId: string): boolean {
  const cells = notebook.model?.cells;
  const model = cells && index < cells.length ? cells.get(index) : undefined;
  if (!model || model.type !== 'code') {
    return false;
  }
  const outputs = (model as ICodeCellModel).outputs;
  for (let i = 0; i < outputs.length; i++) {
    const view = outputs.get(i).data[WIDGET_MIME] as { model_id?: unknown } | undefined;
    if (view?.model_id === modelId) {
      return true;
    }
  }
  return false;
}

/** The index of the cell the new one goes below: the widget's (the active one first), else the active cell. */
function anchorIndex(notebook: Notebook, modelId: unknown): number {
  const active = notebook.activeCellIndex;
  if (typeof modelId === 'string' && modelId) {
    if (active >= 0 && showsWidget(notebook, active, modelId)) {
      return active;
    }
    for (let i = (notebook.model?.cells.length ?? 0) - 1; i >= 0; i--) {
      if (showsWidget(notebook, i, modelId)) {
        return i;
      }
    }
  }
  return active;
}

/** Insert `code` in a new code cell below the anchor, unrun, and make it active; whether it was. */
function insertBelow(panel: NotebookPanel, code: string, modelId: unknown): boolean {
  const notebook = panel.content;
  const model = notebook.model;
  if (panel.isDisposed || !model || model.readOnly) {
    return false;
  }
  const index = anchorIndex(notebook, modelId) + 1;
  model.sharedModel.insertCell(index, { cell_type: 'code', source: code, metadata: {} });
  notebook.activeCellIndex = index;
  notebook.deselectAll();
  const cell = notebook.widgets[index];
  if (cell) {
    void notebook.scrollToCell(cell);
  }
  return true;
}

/** The comm target's handler for one notebook panel. */
function handlerFor(
  panel: NotebookPanel
): (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg) => void {
  return (comm, msg) => {
    const data = msg.content.data as { widget?: unknown };
    const code = requestedCode(data);
    try {
      if (code !== null && insertBelow(panel, code, data.widget)) {
        comm.send({ inserted: true });
      }
    } finally {
      // Closed either way: closed without the answer is the kernel's cue to fall back.
      comm.close();
    }
  };
}

/** Register the target on the panel's kernel now and on each kernel it changes to. */
function watchPanel(panel: NotebookPanel): void {
  const handler = handlerFor(panel);
  const register = (kernel: Kernel.IKernelConnection | null | undefined) => {
    // A restart keeps the connection and its targets; a changed kernel is a new connection.
    if (kernel && kernel.handleComms && !kernel.isDisposed) {
      kernel.registerCommTarget(TARGET, handler);
    }
  };
  register(panel.sessionContext.session?.kernel);
  panel.sessionContext.kernelChanged.connect((_, change) => {
    const old = change.oldValue;
    if (old && !old.isDisposed) {
      old.removeCommTarget(TARGET, handler);
    }
    register(change.newValue);
  });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@hubforge/labextension:insert',
  description: 'Puts the code a hubforge widget offers in a new notebook cell below it, at once.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (_app: JupyterFrontEnd, tracker: INotebookTracker): void => {
    tracker.forEach(watchPanel);
    tracker.widgetAdded.connect((_, panel) => watchPanel(panel));
  }
};

export default plugin;
