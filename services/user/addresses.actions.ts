/**
 * A user's shipping addresses (at most ADDRESS_MAX_PER_USER, one default), and `getAddress`
 * for the order service, which snapshots the address into the order. Someone else's address
 * is a 404. Bound into the `user` service by user.service.ts.
 */
import { randomUUID } from "node:crypto";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { requireUser } from "../../lib/context";
import { inTransaction } from "../../lib/db";
import { notFound, validationError } from "../../lib/errors";
import { ADDRESS_MAX_PER_USER, pickAddressFields, type Address } from "./user.domain";
import * as repo from "./user.repo";
import { Params } from "../../proto/gen/params";
import type { Ctx, UserServiceThis } from "./user.this";
import type { TypedActions } from "../../lib/service-schema";

export function addressActions(): TypedActions<UserServiceThis> {
  return {
    listAddresses: {
      auth: "user",
      params: Params["user.listAddresses"],
      async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.listAddresses">>): Promise<ActionResponse<"user.listAddresses">> {
        return repo.listAddresses(this.db, requireUser(ctx).id);
      },
    },

    createAddress: {
      auth: "user",
      params: Params["user.createAddress"],
      async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.createAddress">>): Promise<ActionResponse<"user.createAddress">> {
        const me = requireUser(ctx);
        const id = randomUUID();
        await inTransaction(this.db, async (trx) => {
          if ((await repo.countAddresses(trx, me.id)) >= ADDRESS_MAX_PER_USER)
            throw validationError(`At most ${ADDRESS_MAX_PER_USER} addresses per account`);
          await repo.insertAddress(trx, me.id, id, pickAddressFields(ctx.params), Date.now());
        });
        ctx.meta.$statusCode = 201;
        ctx.meta.$location = `/api/users/me/addresses/${id}`;
        return this.addressOf(me.id, id);
      },
    },

    updateAddress: {
      auth: "user",
      params: Params["user.updateAddress"],
      async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.updateAddress">>): Promise<ActionResponse<"user.updateAddress">> {
        const me = requireUser(ctx);
        const { id, ...rest } = ctx.params;
        const changes = pickAddressFields(rest);
        if (!(await repo.updateAddress(this.db, me.id, id, changes, Date.now()))) throw notFound("Address");
        return this.addressOf(me.id, id);
      },
    },

    deleteAddress: {
      auth: "user",
      params: Params["user.deleteAddress"],
      async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.deleteAddress">>): Promise<ActionResponse<"user.deleteAddress">> {
        if (!(await repo.deleteAddress(this.db, requireUser(ctx).id, ctx.params.id))) throw notFound("Address");
        ctx.meta.$statusCode = 204;
        return null;
      },
    },

    /** For other services (order: shipping address; notification: e-mail). Not routed. */
    getAddress: {
      visibility: "public",
      params: Params["user.getAddress"],
      async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.getAddress">>): Promise<ActionResponse<"user.getAddress">> {
        const address = await repo.findAddress(this.db, ctx.params.userId, ctx.params.id);
        if (!address) throw notFound("Address");
        return address;
      },
    },
  };
}

export const addressMethods = {
  /** A user's address just written by this request: gone again only if deleted concurrently (404). */
  async addressOf(this: UserServiceThis, userId: string, id: string): Promise<Address> {
    const found = await repo.findAddress(this.db, userId, id);
    if (!found) throw notFound("Address");
    return found;
  },
};
