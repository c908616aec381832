' Demo bot: greets the visitor, offers the visit-booking tool and a small menu.
' The FAQ knowledge base answers free-text questions once the menu is done.

USE KB "faq"
ADD TOOL "book-visit"

CLEAR SUGGESTIONS
ADD SUGGESTION "When are you open?"
ADD SUGGESTION TOOL "book-visit" AS "Book a visit"

TALK "Hello! I am the demo assistant of the Riverside Garden."

TALK "What can I do for you?"
HEAR choice AS "Opening hours", "Talk to us", "Nothing"

SELECT CASE choice
    CASE "Opening hours"
        TALK "We are open Tuesday to Sunday, 9:00 to 18:00."
    CASE "Talk to us"
        TALK "Write your question below, or press Book a visit to schedule one."
    CASE ELSE
        TALK "No problem. Ask me anything about the garden whenever you like."
END SELECT
