/**
 * The contract registry, read from the custom options of the .proto files (see
 * moleculer/options.proto): action name → {request, response} message types, event name →
 * message type. The serializer and the generator both use it, so the .proto files stay the
 * single source of truth.
 */
import type protobuf from "protobufjs";

export interface ActionContract {
  action: string;
  request: protobuf.Type;
  /** null when the action answers null (`moleculer.Void`). */
  response: protobuf.Type | null;
}

export interface Contracts {
  actions: Map<string, ActionContract>;
  events: Map<string, protobuf.Type>;
}

const VOID = "moleculer.Void";

export function fullName(t: protobuf.ReflectionObject): string {
  return t.fullName.replace(/^\./, "");
}

/** Every object of a namespace, depth first, in declaration order. */
export function* walk(ns: protobuf.NamespaceBase): Generator<protobuf.ReflectionObject> {
  for (const obj of ns.nestedArray) {
    yield obj;
    if ("nestedArray" in obj) yield* walk(obj as protobuf.NamespaceBase);
  }
}

export function readContracts(root: protobuf.Root): Contracts {
  const actions = new Map<string, ActionContract>();
  const events = new Map<string, protobuf.Type>();
  for (const obj of walk(root)) {
    const options = obj.options ?? {};
    if (obj.constructor.name === "Service" && options["(moleculer.service)"]) {
      const service = obj as protobuf.Service;
      for (const method of service.methodsArray) {
        method.resolve();
        const action = `${options["(moleculer.service)"]}.${method.name}`;
        if (actions.has(action)) throw new Error(`proto: action ${action} is declared twice`);
        const response = method.resolvedResponseType!;
        actions.set(action, { action, request: method.resolvedRequestType!, response: fullName(response) === VOID ? null : response });
      }
    } else if (obj.constructor.name === "Type" && options["(moleculer.event)"]) {
      const event = String(options["(moleculer.event)"]);
      if (events.has(event)) throw new Error(`proto: event ${event} is declared twice`);
      events.set(event, obj as protobuf.Type);
    }
  }
  return { actions, events };
}

export function isWrapper(type: protobuf.Type): boolean {
  return type.options?.["(moleculer.wrapper)"] === true;
}
