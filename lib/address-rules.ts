/**
 * The validation rules of a postal address (fastest-validator), shared by the user service
 * (saved addresses) and the order service (an address given inline, frozen into the order),
 * so the two accept exactly the same addresses. They also generate the OpenAPI document.
 */
export const addressProps = {
  recipient: { type: "string", trim: true, min: 1, max: 100 },
  phone: { type: "string", trim: true, min: 3, max: 32, pattern: "^[0-9+()\\-.\\s]+$" },
  line1: { type: "string", trim: true, min: 1, max: 200 },
  line2: { type: "string", trim: true, max: 200, optional: true, nullable: true },
  city: { type: "string", trim: true, min: 1, max: 100 },
  province: { type: "string", trim: true, max: 100, optional: true, nullable: true },
  postalCode: { type: "string", trim: true, min: 1, max: 20 },
  country: { type: "string", trim: true, length: 2, pattern: "^[A-Za-z]{2}$" },
} as const;
