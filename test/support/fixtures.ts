/** Values many tests send as they are, written once. */

/** A shipping address an order's create takes (API.md "Orders"): valid in every field. */
export const SHIPPING_ADDRESS = {
  recipient: "Ada Buyer",
  phone: "+86 10 1234 5678",
  line1: "1 Market Street",
  city: "Shanghai",
  postalCode: "200000",
  country: "CN",
};
